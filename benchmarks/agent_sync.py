"""The agent session's CPU per object on a first sync, in one process, without I/O.

``python -m benchmarks.agent_sync [--objects N] [--runs R]``: the pods of ``benchmarks/pods.py``
in an informer ``ObjectCache``, a session with fast digests (as with our server) facing an empty
backend. Two ways through the same code: the inventory request with bucket digests, then the
reconciliation of the (empty) answer with packed shadows (how the agent did its first sync
before); and the request without digests, then one reconciliation whose shadows share the
cache's entries (how it does it now). Process time, each way ``R`` times, alternating.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from benchmarks.pods import pod
from clustersync.adapters.kube.informer import ObjectCache
from clustersync.model import Kind
from clustersync.protocol.agent import AgentSession, Cached, Strategy
from clustersync.protocol.inventory import bucket_digests
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch
from clustersync.protocol.shaping import NamespaceRules

PODS = Kind("", "v1", "pods")
EMPTY = Batch(kind=PODS, batch_type=BATCH_RECONCILIATION, covered=None)  # a backend's answer


def session() -> AgentSession:
    agent = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    agent.use_fast_digests(True)
    return agent


def with_digests(cache: ObjectCache) -> None:
    agent = session()
    bucket_digests(agent.inventory_entries(PODS, cache.values()))
    for _ in agent.reconcile_steps(EMPTY, cache.values()):
        pass


def without_digests(cache: ObjectCache) -> None:
    agent = session()
    agent.share_shadows(PODS, cache.parse)
    assert not agent.inventory_needs_digests(PODS)
    items = (Cached(obj, entry) for obj, entry in cache.values_with_entries())
    for _ in agent.reconcile_steps(EMPTY, items):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent_sync")
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    gc.set_threshold(50_000, 20, 100)  # as the long-running processes do
    cache = ObjectCache()
    for i in range(args.objects):
        obj = pod(i)
        cache.put((obj["metadata"]["namespace"], obj["metadata"]["name"]), obj)
    ways: dict[str, Callable[[ObjectCache], None]] = {
        "digests first, packed shadows": with_digests,
        "no digests, shared shadows": without_digests,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.runs):
        for name, way in ways.items():
            gc.collect()
            started = time.process_time()
            way(cache)
            times[name].append((time.process_time() - started) / args.objects * 1e6)
    print(f"agent session, first sync of {args.objects:,} pods against an empty backend")
    for name, each in times.items():
        print(f"  {name:32} {min(each):6.0f} - {max(each):6.0f} us per object (CPU)")


if __name__ == "__main__":
    main()
