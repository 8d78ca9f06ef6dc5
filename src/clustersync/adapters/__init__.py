"""I/O edges, each behind a small typed Protocol with an in-memory or embedded twin."""
