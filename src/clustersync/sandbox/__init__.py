"""A small Kubernetes API server emulator for tests and demos.

It speaks enough of the REST API (discovery, list/watch with resourceVersion
semantics, create/replace/patch/delete) for kubectl and kubernetes_asyncio::

    sandbox = Sandbox()
    await sandbox.start()                 # sandbox.url is plain http://
    sandbox.write_kubeconfig("kc.yaml")   # https:// on the same port + CA + token
    sandbox.create({...})                 # direct API, same RV counter and watch events
    await sandbox.stop()

Knobs for tests: ``sandbox.bookmark_interval`` (seconds between BOOKMARKs) and
``sandbox.watch_queue_limit`` (undelivered events before a watch gets 410).
Run standalone with ``python -m clustersync.sandbox --kubeconfig FILE``.
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
