"""The agent's CPU per object on a first sync, in one process, without I/O.

``python -m benchmarks.agent_sync [--objects N] [--runs R]``: the pods of ``benchmarks/pods.py``
taken into an informer ``ObjectCache`` (the list's share of the work: what the informer does
with each parsed object) and then reconciled by a session with fast digests (as with our
server) facing an empty backend. Three ways through the code, each ``R`` times, alternating:

- live entries, digests first: the cache holds each object's JSON; the inventory request
  carries bucket digests, then the reconciliation packs each sent object as its shadow (how
  the agent did its first sync before the second way);
- live entries, shared shadows: the request without digests, and one reconciliation that
  parses, shapes and hashes each object and shares the cache's entry as its shadow;
- shaped entries: the cache shapes and hashes each object as it stores it
  (protocol.cache_entry), and the reconciliation decides on the entries' facts and sends the
  shaped JSON they hold without parsing it (how it does it now).

Process time per object, the cache's part and the reconciliation's part.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks.pods import pod
from clustersync.adapters.kube.informer import ObjectCache, key_of
from clustersync.model import Kind
from clustersync.protocol.agent import AgentSession, Cached, Listed, Strategy
from clustersync.protocol.inventory import bucket_digests
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch
from clustersync.protocol.shaping import NamespaceRules

PODS = Kind("", "v1", "pods")
EMPTY = Batch(kind=PODS, batch_type=BATCH_RECONCILIATION, covered=None, msg_id="answer")


def session() -> AgentSession:
    agent = AgentSession({PODS: Strategy.PATCH}, NamespaceRules())
    agent.use_fast_digests(True)
    return agent


def reconcile(agent: AgentSession, items: Iterable[Any]) -> None:
    for _ in agent.reconcile_steps(EMPTY, items):
        pass


def with_digests(cache: ObjectCache) -> None:
    agent = session()
    bucket_digests(agent.inventory_entries(PODS, cache.values()))
    reconcile(agent, cache.values())


def shared_shadows(cache: ObjectCache) -> None:
    agent = session()
    agent.share_shadows(PODS, cache.parse)
    assert not agent.inventory_needs_digests(PODS)
    reconcile(agent, (Cached(obj, entry) for obj, entry in cache.values_with_entries()))


def on_facts(cache: ObjectCache) -> None:
    agent = session()
    agent.share_shadows(PODS, cache.parse)
    reconcile(agent, (Listed(ns, name, e, cache) for (ns, name), e in cache.current_entries()))


Way = tuple[Kind | None, Callable[[ObjectCache], None]]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent_sync")
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    gc.set_threshold(50_000, 20, 100)  # as the long-running processes do
    pods = []
    for i in range(args.objects):
        obj = pod(i)
        obj["metadata"].update(uid=f"uid-{i:08d}", resourceVersion=str(1000 + i))
        pods.append(obj)
    ways: dict[str, Way] = {
        "live entries, digests first": (None, with_digests),
        "live entries, shared shadows": (None, shared_shadows),
        "shaped entries, decided on facts": (PODS, on_facts),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(args.runs):
        for name, (kind, way) in ways.items():
            gc.collect()
            cache = ObjectCache(kind)
            started = time.process_time()
            for obj in pods:
                cache.store(key_of(obj), cache.encoded(obj))
            cached = time.process_time()
            way(cache)
            done = time.process_time()
            per = 1e6 / args.objects
            times[name].append(((cached - started) * per, (done - cached) * per))
    print(f"agent, first sync of {args.objects:,} pods against an empty backend (CPU per object)")
    for name, each in times.items():
        best = min(each, key=sum)
        worst = max(each, key=sum)
        print(
            f"  {name:33} cache {best[0]:4.0f} + reconcile {best[1]:4.0f} = {sum(best):4.0f} us"
            f"  (worst run {sum(worst):4.0f} us)"
        )


if __name__ == "__main__":
    main()
