"""clustersync: keep a backend copy of Kubernetes objects, and push objects back into clusters."""

# The one place the version is written: pyproject.toml reads it for the package metadata, the CLI
# prints it for --version, and tests/deploy checks the deployment's image tag against it.
__version__ = "0.1.0"
