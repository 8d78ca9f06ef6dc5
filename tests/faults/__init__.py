"""The fault matrix (see docs/reliability.md)."""
