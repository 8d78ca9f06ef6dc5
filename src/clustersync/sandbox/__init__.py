"""A small Kubernetes API server emulator for tests and demos.

It speaks enough of the REST API (discovery, list/watch with resourceVersion
semantics, create/replace/patch/delete) for kubectl and kubernetes_asyncio.
"""

from .errors import SandboxError
from .resources import DEFAULT_RESOURCES, ResourceType
from .seed import SeedError, load_seed
from .server import Sandbox, run_sandbox

__all__ = [
    "DEFAULT_RESOURCES",
    "ResourceType",
    "Sandbox",
    "SandboxError",
    "SeedError",
    "load_seed",
    "run_sandbox",
]
