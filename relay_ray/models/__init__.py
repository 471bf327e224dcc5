"""Small local models the project builds itself (no hub downloads)."""
