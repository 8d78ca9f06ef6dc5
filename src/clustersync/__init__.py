"""clustersync: keep a backend copy of Kubernetes objects, and push objects back into clusters."""

__version__ = "0.1.0"
