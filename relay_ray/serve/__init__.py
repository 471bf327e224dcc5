"""Ray Serve deployments (thin shells) and the application builder."""
