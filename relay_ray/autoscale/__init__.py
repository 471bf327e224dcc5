"""Per-tier autoscaling from switch-rate telemetry (pure decisions + a Serve adapter)."""
