"""Benchmarks: each figure printed next to the raw limit measured in the same run."""
