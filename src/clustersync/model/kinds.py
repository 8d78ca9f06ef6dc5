"""Kinds and object references.

A kind is a Kubernetes group/version/resource triple. Its string form, ``group/version/resource``,
is the one kubescape uses on the bus and in its stores; the core group is the empty string, so
pods are ``/v1/pods``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# DNS-1123 subdomain for groups, and the lowercase names Kubernetes allows for versions and
# resources. Stricter than kubescape (which accepts any three strings): a kind is also a bus
# subject token and a database key, so garbage is rejected at the edge.
_GROUP = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KindError(ValueError):
    """A kind string or triple that is not a valid group/version/resource."""


@dataclass(frozen=True, slots=True, order=True)
class Kind:
    group: str
    version: str
    resource: str
    # Every ObjectRef lookup hashes its kind: computed once (kinds are few and immutable) it
    # costs a read, where the generated hash built and hashed a tuple each time. Never pickled
    # (string hashes differ between processes).
    _hash: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.group, self.version, self.resource)))
        if not _GROUP.match(self.group) or len(self.group) > 253:
            raise KindError(f"invalid API group {self.group!r}")
        if not _NAME.match(self.version):
            raise KindError(f"invalid API version {self.version!r}")
        if not _NAME.match(self.resource):
            raise KindError(f"invalid resource {self.resource!r}")

    @classmethod
    def parse(cls, text: str) -> Kind:
        """Parse ``group/version/resource`` (exactly three parts, the group may be empty)."""
        parts = text.split("/")
        if len(parts) != 3:
            raise KindError(f"kind {text!r} is not group/version/resource")
        return cls(parts[0], parts[1], parts[2])

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` field of objects of this kind."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.group}/{self.version}/{self.resource}"


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """One object of one kind in one cluster. Cluster-scoped objects have namespace ``""``."""

    kind: Kind
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"
