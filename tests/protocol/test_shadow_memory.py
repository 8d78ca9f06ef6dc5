"""Long-lived JSON bytes are right-sized: orjson's output keeps its growth buffer (about 32 KiB
for a 5 KB object), which shadows and caches held for every object must not."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from clustersync.model import Kind
from clustersync.protocol.agent import AgentSession, Strategy, WatchEvent
from clustersync.protocol.shaping import NamespaceRules

PODS = Kind("", "v1", "pods")


def pod(i: int) -> dict[str, Any]:
    env = [{"name": f"V{k}", "value": "x" * 40} for k in range(40)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": "ns", "uid": f"u{i}", "resourceVersion": "1"},
        "spec": {"containers": [{"name": "c", "image": "i", "env": env}]},
    }


def test_shadows_cost_about_their_size() -> None:
    pods = [pod(i) for i in range(50)]
    session = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for obj in pods:
            session.local_change(PODS, WatchEvent.MODIFIED, obj)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    shadow_bytes = sum(len(s) for s in session.shadows.values())
    assert len(session.shadows) == 50
    assert shadow_bytes > 50 * 1000  # the objects are not trivial
    assert held < 2 * shadow_bytes, f"held {held} B for {shadow_bytes} B of shadows"
    assert orjson.loads(next(iter(session.shadows.values())))["metadata"]["name"] == "p0"
