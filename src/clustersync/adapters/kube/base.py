"""The Kubernetes operations the agent needs, on plain dicts.

Objects are never round-tripped through generated models: those rewrite timestamps and drop
unknown fields, which would change checksums.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from clustersync.model import Kind, ObjectRef

if TYPE_CHECKING:  # page_items raises KubeError, defined here
    from clustersync.adapters.kube.page_items import PageItems


class KubeError(RuntimeError):
    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFoundError(KubeError):
    """404: the object, or the resource type itself (a CRD not installed)."""


class KubeConflictError(KubeError):
    """409: AlreadyExists on create, Conflict on a stale resourceVersion."""


class KubeGoneError(KubeError):
    """410: the requested resourceVersion is older than the server's history; relist."""


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    kind: Kind
    kind_name: str  # e.g. "Deployment"
    namespaced: bool


@dataclass(frozen=True, slots=True)
class WatchItem:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A watch event the client could not read (too large, not JSON, no object): skipped so the
    stream goes on. ``reason`` is a metric label; ``namespace``/``name`` are best guesses."""

    reason: str  # too_large, undecodable
    detail: str
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a list; ``resource_version`` is the list's (the same on every page).
    The items are parsed as they are iterated (once), and may raise KubeError then."""

    items: PageItems
    resource_version: str


class KubeApi(Protocol):
    async def resource_info(self, kind: Kind) -> ResourceInfo: ...

    async def list(self, kind: Kind, page_size: int = 500) -> tuple[list[dict[str, Any]], str]:
        """Every object of the kind (all namespaces) and the list's resourceVersion."""
        ...

    def list_pages(self, kind: Kind, page_size: int = 500) -> AsyncIterator[ListPage]:
        """The same list a page at a time, so a large kind is never whole in memory; raises
        KubeGoneError when the server forgot the list's snapshot between two pages."""
        ...

    @property
    def server_url(self) -> str:
        """The API server's address (part of a saved cache's identity)."""
        ...

    def watch(
        self,
        kind: Kind,
        resource_version: str,
        timeout_seconds: int = 300,
        *,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[WatchItem | Unreadable]:
        """Events after ``resource_version``; raises KubeGoneError when it is too old. An event
        that cannot be read is reported as :class:`Unreadable` and the stream goes on.
        ``on_open`` is called once the server accepted the watch (its response headers)."""
        ...

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None: ...

    async def create(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, ref: ObjectRef) -> bool:
        """True if deleted, False if it was already absent."""
        ...

    async def server_version(self) -> str: ...

    async def close(self) -> None: ...
