"""The agent's CPU per object on a first sync, in one process, without I/O.

``python -m benchmarks.agent_sync [--objects N] [--runs R] [--whole-pages]``: the pods of
``benchmarks/pods.py`` as an API server lists them (pages of 500 as JSON bytes, items without
kind) taken into an informer ``ObjectCache`` (the list's share of the work: parse each item as
adapters.kube.page_items hands it over, or each page at once with ``--whole-pages``, and make
its cache entry) and then reconciled by a session with fast digests (as with our server) facing
an empty backend. Three ways through the code, each ``R`` times, alternating:

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

import orjson

from benchmarks.pods import pod
from clustersync.adapters.kube.informer import ObjectCache, key_of
from clustersync.model import Kind
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Cached, Listed, Strategy
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
PAGE = 500  # objects per list page (the informer's limit)
DEFAULTS = {"apiVersion": "v1", "kind": "Pod"}


def list_pages(objects: int) -> list[bytes]:
    """The pods as list pages: ``metadata`` first and no kind in the items, as Kubernetes
    writes them."""
    pages = []
    for start in range(0, objects, PAGE):
        items = []
        for i in range(start, min(start + PAGE, objects)):
            obj = pod(i)
            obj["metadata"].update(uid=f"uid-{i:08d}", resourceVersion=str(1000 + i))
            del obj["apiVersion"], obj["kind"]
            items.append({"metadata": obj.pop("metadata"), **obj})
        head = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}}
        pages.append(orjson.dumps({**head, "items": items}) + b"\n")
    return pages


def fill(cache: ObjectCache, pages: list[bytes], *, whole: bool) -> None:
    """What the informer does with each page of its list (the parsed items are freed as it
    goes, as the informer does)."""
    if not whole:
        # Imported here so that --whole-pages also runs against an older tree (PYTHONPATH).
        from clustersync.adapters.kube.page_items import read_page
    for body in pages:
        if whole:
            items = orjson.loads(body)["items"]
            for item in items:
                item.update(DEFAULTS)
        else:
            items = read_page(body, DEFAULTS, "GET")[1]
        for obj in items:
            cache.store(key_of(obj), cache.encoded(obj))
        items.clear()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent_sync")
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--whole-pages", action="store_true", help="parse each list page at once (as before)"
    )
    args = parser.parse_args()
    gc.set_threshold(50_000, 20, 100)  # as the long-running processes do
    pages = list_pages(args.objects)
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
            fill(cache, pages, whole=args.whole_pages)
            cached = time.process_time()
            way(cache)
            done = time.process_time()
            per = 1e6 / args.objects
            times[name].append(((cached - started) * per, (done - cached) * per))
    how = "each page parsed at once" if args.whole_pages else "each item parsed when reached"
    print(
        f"agent, first sync of {args.objects:,} pods against an empty backend (CPU per object;"
        f" the cache part from list pages of {PAGE}, {how})"
    )
    for name, each in times.items():
        best = min(each, key=sum)
        worst = max(each, key=sum)
        print(
            f"  {name:33} cache {best[0]:4.0f} + reconcile {best[1]:4.0f} = {sum(best):4.0f} us"
            f"  (worst run {sum(worst):4.0f} us)"
        )


if __name__ == "__main__":
    main()
