"""Preparing backend-authored objects for the cluster's API.

Server-managed metadata (uid, resourceVersion, timestamps, managedFields) in a backend copy would
make a create fail or a replace conflict, so it is dropped before a create and taken from the live
object before a replace. Labels and annotations are merged, the backend's values winning, so
in-cluster controllers keep the keys they added.
"""

from __future__ import annotations

import copy
from typing import Any

from clustersync.model import ObjectRef

_SERVER_MANAGED = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def prepare_create(obj: dict[str, Any], ref: ObjectRef, kind_name: str) -> dict[str, Any]:
    body = copy.deepcopy(obj)
    body["apiVersion"] = ref.kind.api_version
    body.setdefault("kind", kind_name)
    meta = body.setdefault("metadata", {})
    for key in _SERVER_MANAGED:
        meta.pop(key, None)
    meta["name"] = ref.name
    if ref.namespace:
        meta["namespace"] = ref.namespace
    else:
        meta.pop("namespace", None)
    return body


def prepare_replace(
    obj: dict[str, Any], ref: ObjectRef, kind_name: str, live: dict[str, Any]
) -> dict[str, Any]:
    body = prepare_create(obj, ref, kind_name)
    meta = body["metadata"]
    live_meta = live.get("metadata") or {}
    for key in ("labels", "annotations"):
        merged = {**(live_meta.get(key) or {}), **(meta.get(key) or {})}
        if merged:
            meta[key] = merged
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        if key in live_meta:
            meta[key] = live_meta[key]
    return body
