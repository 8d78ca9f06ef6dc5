"""Bytes per object and CPU per put/get of the agent's packed object cache and shadows.

``python -m benchmarks.agent_cache [--objects N]``: the pods of ``benchmarks/pods.py`` (whose
2,200-character "x" annotation compresses unrealistically well), and the same pods without it
but with what makes real pods differ (uids, timestamps, IPs, hashes), put into an
``ObjectCache`` and read back; then the same objects as shadows in ``SyncedObjects``.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from typing import Any

import orjson

from benchmarks.pods import pod
from clustersync.adapters.kube.informer import ObjectCache
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.synced import SyncedObjects

PODS = Kind("", "v1", "pods")


def realistic_pod(i: int) -> dict[str, Any]:
    """A pods.py pod without the padding, with per-pod values as real clusters have them."""
    obj = pod(i)
    meta = obj["metadata"]
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    meta["annotations"]["description"] = f"payments shard {i % 16}, owner team-{i % 9}"
    meta["uid"] = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    meta["resourceVersion"] = str(184_467_000 + i * 7)
    meta["creationTimestamp"] = f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z"
    meta["labels"]["pod-template-hash"] = digest[32:42]
    meta["generateName"] = f"service-{i % 50}-{digest[32:42]}-"
    for status in obj["status"]["containerStatuses"]:
        status["containerID"] = f"containerd://{hashlib.sha256(digest.encode()).hexdigest()}"
        status["imageID"] = f"registry.example.com/team/service@sha256:{digest}"
        status["state"]["running"]["startedAt"] = meta["creationTimestamp"]
    obj["status"]["hostIP"] = f"10.128.{i % 200}.{(i * 7) % 250}"
    obj["status"]["startTime"] = meta["creationTimestamp"]
    return obj


def measure(name: str, objects: list[dict[str, Any]]) -> None:
    cache = ObjectCache()
    keys = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    json_bytes = sum(len(orjson.dumps(o)) for o in objects) / len(objects)
    started = time.process_time()
    for key, obj in zip(keys, objects, strict=True):
        cache.put(key, obj)
    put = (time.process_time() - started) / len(objects)
    started = time.process_time()
    for key in keys:
        cache.get(key)
    get = (time.process_time() - started) / len(objects)
    entry_bytes = sum(len(entry) for entry in cache._items.values()) / len(objects)
    store = SyncedObjects()
    shadows = [orjson.dumps(o) for o in objects]
    refs = [ObjectRef(PODS, ns, n) for ns, n in keys]
    started = time.process_time()
    for ref, shadow in zip(refs, shadows, strict=True):
        store.shadows[ref] = shadow
    shadow_put = (time.process_time() - started) / len(objects)
    started = time.process_time()
    for ref in refs:
        store.shadows.get(ref)
    shadow_get = (time.process_time() - started) / len(objects)
    packed = store.shadows.packed_size() / len(objects)
    print(
        f"  {name:<30} JSON {json_bytes:>6,.0f} B | cache entry {entry_bytes:>5,.0f} B,"
        f" put {put * 1e6:>4,.0f} us, get {get * 1e6:>4,.0f} us"
        f" | shadow {packed:>5,.0f} B, put {shadow_put * 1e6:>4,.0f} us,"
        f" get {shadow_get * 1e6:>4,.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent_cache")
    parser.add_argument("--objects", type=int, default=5000)
    n = parser.parse_args().objects
    print(f"agent cache and shadows, {n:,} pods (CPU time per object; sizes without headers)")
    measure("benchmarks/pods.py pods", [pod(i) for i in range(n)])
    measure("pods without the padding", [realistic_pod(i) for i in range(n)])


if __name__ == "__main__":
    main()
