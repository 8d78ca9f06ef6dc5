"""The ``/scale`` subresource (``autoscaling/v1`` Scale), for `kubectl scale`."""

from __future__ import annotations

from typing import Any

from .errors import bad_request, invalid
from .resources import ResourceType

SCALABLE = {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")}


def is_scalable(rt: ResourceType) -> bool:
    return (rt.group, rt.resource) in SCALABLE


def to_scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    keep = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0)},
    }


def apply_scale(rt: ResourceType, cur: dict[str, Any], scale: Any) -> dict[str, Any]:
    """The full object after writing ``scale``; its resourceVersion (if any)
    stays in the result so the store checks it as a precondition."""
    if not isinstance(scale, dict):
        raise bad_request("a Scale must be a JSON object")
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(rt, cur["metadata"]["name"], "spec.replicas: must be a non-negative integer")
    new = {**cur, "spec": {**(cur.get("spec") or {}), "replicas": replicas}}
    new["metadata"] = dict(cur["metadata"])
    sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
    if sent_rv:
        new["metadata"]["resourceVersion"] = sent_rv
    return new
