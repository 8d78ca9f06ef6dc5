"""Shadows are held packed: what the session holds per patch-strategy object is less than the
object's own JSON (orjson's output once kept a 32 KiB growth buffer per shadow; then each
shadow was a full JSON copy)."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from clustersync.model import Kind
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy, WatchEvent
from clustersync.protocol.shaping import NamespaceRules

PODS = Kind("", "v1", "pods")


def pod(i: int) -> dict[str, Any]:
    env = [{"name": f"V{k}", "value": f"value-{i}-{k}"} for k in range(40)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": "ns", "uid": f"u{i}", "resourceVersion": "1"},
        "spec": {"containers": [{"name": "c", "image": f"i:{i}", "env": env}]},
    }


def held_for(session: AgentSession, pods: list[dict[str, Any]]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for obj in pods:
            session.local_change(PODS, WatchEvent.MODIFIED, obj)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_shadows_cost_less_than_their_json() -> None:
    session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    # The first objects of a kind teach the packer its dictionary: a one-time cost, left out.
    held_for(session, [pod(i) for i in range(50)])
    more = [pod(i) for i in range(50, 250)]
    held = held_for(session, more)
    json_bytes = sum(len(orjson.dumps(obj)) for obj in more)
    assert len(session.shadows) == 250
    assert held < json_bytes, f"held {held} B for {json_bytes} B of JSON"
    first = next(iter(session.shadows))
    assert orjson.loads(session.shadows[first])["metadata"]["name"] == "p0"
