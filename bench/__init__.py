"""Benchmarks that print a table and write JSON; run each as a module: ``python -m bench.NAME``."""
