"""The web dashboard served at ``/ui`` by ``backend`` and ``api``."""

from clustersync.runtime.ui.dashboard import Dashboard
from clustersync.runtime.ui.fleet import LinkFacts, server_links

__all__ = ["Dashboard", "LinkFacts", "server_links"]
