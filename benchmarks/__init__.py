"""Benchmarks: what the gateway adds over a direct call to the same upstream. Never imported by tests."""
