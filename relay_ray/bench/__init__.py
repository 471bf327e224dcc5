"""Benchmarks (run from the CLI; numbers go to docs/benchmarks.md)."""
