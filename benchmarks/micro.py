"""Checksums, patches and wire size, against their raw limits."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from hashlib import sha256

import orjson

from benchmarks.pods import pod
from clustersync.model import Kind
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy, WatchEvent
from clustersync.protocol.backend import StoredCopy, decide
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.codec import encode
from clustersync.protocol.digest import fast_digest
from clustersync.protocol.mergepatch import apply_patch, create_patch
from clustersync.protocol.messages import PatchObject, PutObject
from clustersync.protocol.shaping import NamespaceRules, shape

PODS = Kind("", "v1", "pods")


def per_second(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def row(label: str, value: str, limit_label: str, limit: str) -> None:
    print(f"  {label:<44} {value:>14}   | {limit_label:<34} {limit:>14}")


def change_costs(fast: bool, n: int) -> tuple[float, float]:
    """One-field changes a second through the agent session (a new version each time, so never
    a cached checksum), and such patches a second the backend verifies and applies."""
    session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    session.use_fast_digests(fast)
    versions = [orjson.loads(orjson.dumps(pod(1))) for _ in range(2)]
    for i, version in enumerate(versions):
        version["metadata"]["labels"]["release"] = f"r{i}"
    (put,) = session.local_change(PODS, WatchEvent.MODIFIED, versions[0])
    assert isinstance(put, PutObject)
    stored = StoredCopy(put.checksum, put.object)
    (patch,) = session.local_change(PODS, WatchEvent.MODIFIED, versions[1])
    assert isinstance(patch, PatchObject) and decide(patch, stored).send == []  # it verifies
    backend = per_second(lambda: decide(patch, stored), n)
    counter = itertools.count(3)

    def change() -> None:
        resource_version = next(counter)
        live = versions[resource_version % 2]
        live["metadata"]["resourceVersion"] = str(resource_version)
        session.local_change(PODS, WatchEvent.MODIFIED, live)

    return per_second(change, n), backend


def run() -> None:
    print("micro benchmarks (one core)")
    obj = shape(PODS, pod(1))
    size = len(orjson.dumps(obj))
    n = 2000
    hashes = per_second(lambda: canonical_checksum(obj), n)
    raw = per_second(lambda: sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest(), n)
    row(
        f"kubescape checksum, {size} B pod",
        f"{hashes:,.0f}/s",
        "raw sha256(orjson sorted)",
        f"{raw:,.0f}/s",
    )
    fast = per_second(lambda: fast_digest(obj), n)
    row("fast digest (clustersync.v2)", f"{fast:,.0f}/s", "raw sha256(orjson sorted)",
        f"{raw:,.0f}/s")

    changed = orjson.loads(orjson.dumps(obj))
    changed["metadata"]["labels"]["release"] = "canary"
    changed["metadata"]["resourceVersion"] = "2"
    creates = per_second(lambda: create_patch(obj, changed), n)
    patch = create_patch(obj, changed)
    applies = per_second(lambda: apply_patch(obj, patch), n)
    parse = per_second(lambda: orjson.loads(orjson.dumps(obj)), n)
    row("merge patch create", f"{creates:,.0f}/s", "raw orjson dumps+loads", f"{parse:,.0f}/s")
    row("merge patch apply", f"{applies:,.0f}/s", "raw orjson dumps+loads", f"{parse:,.0f}/s")
    for fast, name in ((False, "kubescape hash"), (True, "fast digest")):
        agent, backend = change_costs(fast, n)
        row(f"one-field change, agent, {name}", f"{agent:,.0f}/s", "raw orjson dumps+loads",
            f"{parse:,.0f}/s")
        row(f"  backend verifies + applies, {name}", f"{backend:,.0f}/s",
            "raw orjson dumps+loads", f"{parse:,.0f}/s")

    session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    live = pod(1)
    session.local_change(PODS, WatchEvent.MODIFIED, live)  # first send: whole object, sets shadow
    edited = orjson.loads(orjson.dumps(live))
    edited["metadata"]["labels"]["release"] = "canary"
    edited["metadata"]["resourceVersion"] = "2"
    (msg,) = session.local_change(PODS, WatchEvent.MODIFIED, edited)
    frame = len(encode(msg))
    full = len(orjson.dumps(shape(PODS, edited)))
    row("one-field change, frame bytes", f"{frame:,} B", "whole shaped object", f"{full:,} B")
    print(f"  {'  = share of the object sent':<44} {100 * frame / full:>13.1f}%   | target < 5%")
