"""Benchmarks of sc-assets (``make bench``, ``python -m benchmarks``); see BENCHMARKS.md."""
