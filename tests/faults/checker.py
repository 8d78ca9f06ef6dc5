"""An independent convergence check: the backend's rows against what the cluster serves.

It deliberately does not use the project's ``shape`` or ``checksum``: a bug there must be able to
fail it. The rules are written out here, small enough to check by eye:

- an object is synced if its kind is synced, its namespace is not excluded, and it is not a Pod,
  Job or ReplicaSet owned by a controller (those would duplicate their owner);
- a stored row matches a live object when uid and resourceVersion are equal and the fields that
  must survive the trip are equal: ``metadata.name``, ``metadata.namespace``,
  ``metadata.labels``, ``data`` and ``spec``, where every container ``env[].value`` is stored as
  the mask ``XXXXXX`` (secrets never leave the cluster);
- an object the backend wrote must be in the cluster with the labels, data and spec it was
  written with, and an object the backend deleted must be gone.

Rows are read through the backend's own query API (``GET /api/v1/objects?full=1``), the way an
operator or UI reads them, so the checker works unchanged against an in-process backend and a
fleet of processes. It waits on a condition with a timeout, never a fixed sleep, and on failure
raises with every diverged object named.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MASK = "XXXXXX"
SURVIVING_METADATA = ("name", "namespace", "labels")
SURVIVING_TOP_LEVEL = ("data", "spec")
_CONTROLLED_KINDS = frozenset({"Pod", "Job", "ReplicaSet"})

ObjectId = tuple[str, str, str, str]  # (cluster, kind as group/version/resource, ns, name)
LiveLister = Callable[[str], list[dict[str, Any]]]  # kind string -> objects the cluster serves
RowLister = Callable[[str], Awaitable[list[dict[str, Any]]]]  # cluster -> rows with "object"


# ---------------------------------------------------------------- the comparison rules


def masked(value: Any) -> Any:
    """``value`` with every ``env`` entry's literal ``value`` replaced by the mask."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "env" and isinstance(item, list):
                out[key] = [
                    {**e, "value": MASK} if isinstance(e, dict) and "value" in e else masked(e)
                    for e in item
                ]
            else:
                out[key] = masked(item)
        return out
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def is_synced(obj: dict[str, Any], excluded_namespaces: Iterable[str]) -> bool:
    meta = obj.get("metadata") or {}
    if meta.get("namespace", "") in set(excluded_namespaces):
        return False
    if obj.get("kind") in _CONTROLLED_KINDS:
        owners = meta.get("ownerReferences") or []
        if any(isinstance(o, dict) and o.get("controller") for o in owners):
            return False
        if obj.get("kind") == "Pod" and "pod-template-hash" in (meta.get("labels") or {}):
            return False
    return True


def surviving(obj: dict[str, Any], mask: bool) -> dict[str, Any]:
    """The fields a stored copy must share with the live object; ``mask`` for the live side,
    whose secrets the store must hold only as the mask."""
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {f"metadata.{k}": meta.get(k) or None for k in SURVIVING_METADATA}
    for key in SURVIVING_TOP_LEVEL:
        out[key] = masked(obj.get(key)) if mask else obj.get(key)
    return out


def row_differences(live: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """Why a stored row does not match the live object; empty when it does."""
    meta = live.get("metadata") or {}
    problems = []
    if row.get("uid") != meta.get("uid"):
        problems.append(f"uid store={row.get('uid')!r} cluster={meta.get('uid')!r}")
    if row.get("resourceVersion") != meta.get("resourceVersion"):
        problems.append(f"resourceVersion store={row.get('resourceVersion')!r} "
                        f"cluster={meta.get('resourceVersion')!r}")
    want, have = surviving(live, mask=True), surviving(row.get("object") or {}, mask=False)
    problems += [f"{name} differs" for name in want if want[name] != have[name]]
    return problems


def written_differences(written: dict[str, Any], live: dict[str, Any] | None) -> list[str]:
    """Why the cluster does not hold what the backend wrote; empty when it does."""
    if live is None:
        return ["written by the backend but absent from the cluster"]
    problems = []
    labels = (written.get("metadata") or {}).get("labels") or None
    if labels != ((live.get("metadata") or {}).get("labels") or None):
        problems.append("metadata.labels differ from what the backend wrote")
    for key in SURVIVING_TOP_LEVEL:
        if key in written and written[key] != live.get(key):
            problems.append(f"{key} differs from what the backend wrote")
    return problems


# ---------------------------------------------------------------- the checker


@dataclass
class Divergence:
    object: ObjectId
    problem: str

    def __str__(self) -> str:
        cluster, kind, namespace, name = self.object
        where = f"{namespace}/{name}" if namespace else name
        return f"{cluster} {kind} {where}: {self.problem}"


@dataclass
class Verdict:
    diverged: list[Divergence]
    lost_writes: int  # backend writes or deletes accepted but not reflected in the cluster
    seconds: float

    def __bool__(self) -> bool:
        return not self.diverged


@dataclass
class Checker:
    """Compares each registered cluster with the backend's rows of that cluster."""

    rows: RowLister
    kinds: tuple[str, ...]  # "group/version/resource", e.g. "/v1/configmaps"
    excluded_namespaces: frozenset[str] = frozenset()
    clusters: dict[str, LiveLister] = field(default_factory=dict)
    written: dict[ObjectId, dict[str, Any] | None] = field(default_factory=dict)
    # Objects the cluster holds that the agent must skip (e.g. nested too deep to encode).
    skipped: set[ObjectId] = field(default_factory=set)
    verdicts: list[Verdict] = field(default_factory=list)

    def add_cluster(self, name: str, live: LiveLister) -> None:
        self.clusters[name] = live

    def wrote(self, cluster: str, kind: str, obj: dict[str, Any]) -> None:
        """Record a backend write the cluster must end up holding."""
        meta = obj.get("metadata") or {}
        self.written[(cluster, kind, meta.get("namespace", ""), meta["name"])] = obj

    def deleted(self, cluster: str, kind: str, namespace: str, name: str) -> None:
        """Record a backend delete: the object must end up absent from the cluster."""
        self.written[(cluster, kind, namespace, name)] = None

    def must_skip(self, cluster: str, kind: str, namespace: str, name: str) -> None:
        """This live object cannot be synced: it must be absent from the store."""
        self.skipped.add((cluster, kind, namespace, name))

    def forget_writes(self) -> None:
        """The cluster's own later changes supersede earlier backend writes."""
        self.written.clear()

    def _live(self, cluster: str) -> dict[ObjectId, dict[str, Any]]:
        out = {}
        for kind in self.kinds:
            for obj in self.clusters[cluster](kind):
                meta = obj["metadata"]
                oid = (cluster, kind, meta.get("namespace", ""), meta["name"])
                if is_synced(obj, self.excluded_namespaces) and oid not in self.skipped:
                    out[oid] = obj
        return out

    async def _stored(self, cluster: str) -> dict[ObjectId, dict[str, Any]]:
        # Rows of every kind: a row of a kind the cluster does not sync is a divergence too.
        return {(cluster, row["kind"], row["namespace"], row["name"]): row
                for row in await self.rows(cluster)}

    async def divergences(self, clusters: Iterable[str] | None = None) -> tuple[
            list[Divergence], int]:
        """Every object whose row and live copy disagree, and the lost backend writes."""
        found: list[Divergence] = []
        lost = 0
        for cluster in clusters or self.clusters:
            live, stored = self._live(cluster), await self._stored(cluster)
            for oid in sorted(live.keys() - stored.keys()):
                found.append(Divergence(oid, "in the cluster, missing from the store"))
            for oid in sorted(stored.keys() - live.keys()):
                found.append(Divergence(oid, "in the store, absent from the cluster"))
            for oid in sorted(live.keys() & stored.keys()):
                found += [Divergence(oid, p) for p in row_differences(live[oid], stored[oid])]
            for oid, obj in self.written.items():
                if oid[0] != cluster:
                    continue
                if obj is None:
                    problems = ["deleted by the backend but still in the cluster"] if (
                        oid in live) else []
                else:
                    problems = written_differences(obj, live.get(oid))
                lost += bool(problems)
                found += [Divergence(oid, p) for p in problems]
        return found, lost

    async def converged(self, timeout: float = 30.0, clusters: Iterable[str] | None = None,
                        interval: float = 0.1) -> Verdict:
        """Poll until nothing diverges; raise naming every diverged object on timeout.

        Each call's verdict is kept in ``verdicts`` (also on failure) for the fault report.
        """
        names = list(clusters) if clusters is not None else None
        started = time.monotonic()
        deadline = started + timeout
        last: tuple[list[Divergence], int] = ([], 0)
        error = ""
        while True:
            try:
                last = await self.divergences(names)
                error = ""
            except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
                # The backend may be restarting: not yet converged, try again.
                error = f"could not read the store: {exc!r}"
                last = ([Divergence(("?", "?", "?", "?"), error)], last[1])
            if not last[0]:
                verdict = Verdict([], 0, time.monotonic() - started)
                self.verdicts.append(verdict)
                return verdict
            if time.monotonic() >= deadline:
                verdict = Verdict(last[0], last[1], time.monotonic() - started)
                self.verdicts.append(verdict)
                listing = "\n  ".join(str(d) for d in last[0])
                raise AssertionError(
                    f"not converged after {timeout:.0f}s: {len(last[0])} divergences, "
                    f"{last[1]} backend writes lost\n  {listing}")
            await asyncio.sleep(interval)  # poll interval, not a synchronisation delay


def api_rows(session: aiohttp.ClientSession, base_url: Callable[[], str], token: str,
             account: str) -> RowLister:
    """Rows of one cluster through the backend's query API (full objects included)."""

    async def rows(cluster: str) -> list[dict[str, Any]]:
        async with session.get(
            f"{base_url()}/api/v1/objects",
            params={"account": account, "cluster": cluster, "full": "1"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as response:
            if response.status != 200:
                raise ValueError(f"the API answered {response.status}: {await response.text()}")
            doc = await response.json()
            items: list[dict[str, Any]] = doc["items"]
            return items

    return rows


def sandbox_lister(sandbox: Any) -> LiveLister:
    """What a sandbox cluster serves for a "group/version/resource" kind string."""

    def live(kind: str) -> list[dict[str, Any]]:
        group, version, resource = kind.split("/")
        objects: list[dict[str, Any]] = sandbox.list(group, version, resource)
        return objects

    return live
