"""The version our agent announces to servers.

kubescape's server decides from the agent's ``X-SYNCHRONIZER-VERSION`` whether it may send
batch messages (reconciliation): only a semantic version ``vX.Y.Z`` at least ``v0.0.57`` gets
them. Anything else, ``clustersync-0.1.0`` included, is treated as too old.
"""

from __future__ import annotations

import re

from clustersync import __version__

AGENT_VERSION = f"v{__version__}"

# Semantic Versioning 2.0.0 with kubescape's leading "v": v1.2.3, v1.2.3-rc.1, v1.2.3+build.5.
_SEMVER = re.compile(
    r"v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def is_agent_version(text: str) -> bool:
    """True for a ``vX.Y.Z`` semantic version, the form a kubescape server understands."""
    return _SEMVER.fullmatch(text) is not None
