"""Quality: evaluation harness and calibration of relay policies."""
