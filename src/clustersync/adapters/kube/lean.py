"""Load kubernetes_asyncio's configuration and transport without its generated API and models.

The agent uses kubernetes_asyncio for kubeconfig parsing, credentials and its authenticated
transport only; objects stay plain dicts. Importing the package the usual way loads its
generated API classes and some 1,500 model modules: about 40 MB of resident memory in every
agent, more than 20,000 synced pods take. Here the packages whose ``__init__`` pulls those in are
registered as empty packages (their submodules still import normally from the same directories),
and the client's transport modules are imported directly.

Only for a process that uses nothing else of kubernetes_asyncio (the agent command): once done,
``from kubernetes_asyncio import client`` gives the lean package. Does nothing if the package is
already imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

_ROOT = "kubernetes_asyncio"


def load_transport_only() -> bool:
    """Register the lean packages; False if kubernetes_asyncio was imported already."""
    if _ROOT in sys.modules:
        return False
    spec = importlib.util.find_spec(_ROOT)
    if spec is None or not spec.submodule_search_locations:
        return False  # not installed: the ordinary import reports it
    root_dir = Path(next(iter(spec.submodule_search_locations)))
    root = _empty_package(_ROOT, root_dir)
    client = _empty_package(f"{_ROOT}.client", root_dir / "client")
    _empty_package(f"{_ROOT}.client.models", root_dir / "client" / "models")
    root.client = client  # type: ignore[attr-defined]
    api_client = importlib.import_module(f"{_ROOT}.client.api_client")
    configuration = importlib.import_module(f"{_ROOT}.client.configuration")
    client.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
    client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    return True


def _empty_package(name: str, directory: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(directory)]
    module.__spec__ = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    if module.__spec__ is not None:
        module.__spec__.submodule_search_locations = [str(directory)]
    module.__package__ = name
    sys.modules[name] = module
    return module
