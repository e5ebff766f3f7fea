"""Benchmarks: ``python -m bench.<name> --size full|smoke`` (see docs/performance.md)."""
