"""Tracing (OpenTelemetry), metrics (Ray -> Prometheus) and switch-rate telemetry."""
