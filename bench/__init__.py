"""Benchmarks: `make bench` runs bench/ingest.py (see docs/BENCHMARKS.md)."""
