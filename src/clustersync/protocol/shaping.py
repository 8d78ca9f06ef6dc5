"""What the agent sends of an object, and which objects it sends at all (reference 3.5, 3.6).

Objects are filtered by namespace rules and by ownership (controller-owned Pods, Jobs and
ReplicaSets would only duplicate their owner), stripped of server bookkeeping that changes without
meaning, and have container env values masked so secrets never leave the cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from clustersync.model import Kind
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION

MASK = "XXXXXX"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_STRIPPED_ANNOTATIONS = (LAST_APPLIED, CHECKSUM_ANNOTATION)
_OWNED_KINDS = frozenset({"Pod", "Job", "ReplicaSet"})
_CONTROLLER_API_VERSIONS = frozenset({"apps/v1", "batch/v1", "batch/v1beta1"})
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

# Fields set to null (not removed) before hashing, per kind: they churn without meaning.
NULLED_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "/v1/nodes": (("status", "conditions"),),
    "spdx.softwarecomposition.kubescape.io/v1beta1/sbomsyfts": (
        ("spec", "syft", "descriptor"),
        ("spec", "syft", "files"),
        ("spec", "syft", "artifactRelationships"),
    ),
    "spdx.softwarecomposition.kubescape.io/v1beta1/sbomsyftfiltereds": (
        ("spec", "syft", "descriptor"),
        ("spec", "syft", "files"),
        ("spec", "syft", "artifactRelationships"),
    ),
}


@dataclass(frozen=True, slots=True)
class NamespaceRules:
    operator_namespace: str = ""
    include: frozenset[str] = field(default_factory=frozenset)
    exclude: frozenset[str] = field(default_factory=frozenset)

    def allows(self, namespace: str) -> bool:
        if not namespace or namespace == self.operator_namespace:
            return True
        if self.include:
            return namespace in self.include
        return namespace not in self.exclude


def has_controller_parent(obj: dict[str, Any]) -> bool:
    """True for Pods, Jobs and ReplicaSets made by a built-in controller (kubescape's rule)."""
    if obj.get("kind") not in _OWNED_KINDS:
        return False
    meta = obj.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    if owners:
        first = owners[0]
        return isinstance(first, dict) and first.get("apiVersion") in _CONTROLLER_API_VERSIONS
    labels = meta.get("labels") or {}
    return obj.get("kind") == "Pod" and bool(labels.get("pod-template-hash"))


def is_filtered(obj: dict[str, Any], rules: NamespaceRules) -> bool:
    """True if the agent must not sync this object."""
    namespace = (obj.get("metadata") or {}).get("namespace") or ""
    if namespace and namespace == rules.operator_namespace:
        return False  # the operator's own namespace bypasses every other rule
    if not rules.allows(namespace):
        return True
    return has_controller_parent(obj)


def pod_spec_path(kind_name: str) -> tuple[str, ...]:
    if kind_name in ("Pod", "Namespace"):
        return ("spec",)
    if kind_name == "CronJob":
        return ("spec", "jobTemplate", "spec", "template", "spec")
    return ("spec", "template", "spec")


def _walk(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def env_entries(obj: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (container list, container name, env entry) for every env entry with a value."""
    spec = _walk(obj, pod_spec_path(str(obj.get("kind", ""))))
    if not isinstance(spec, dict):
        return
    for list_name in _CONTAINER_LISTS:
        containers = spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for container in containers:
            if not isinstance(container, dict) or not isinstance(container.get("env"), list):
                continue
            for entry in container["env"]:
                if isinstance(entry, dict) and "value" in entry:
                    yield list_name, str(container.get("name", "")), entry


def shape(kind: Kind, live: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``live`` as the agent sends it: stripped, nulled and masked."""
    obj = copy.deepcopy(live)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            for key in _STRIPPED_ANNOTATIONS:
                annotations.pop(key, None)
            if not annotations:
                del meta["annotations"]
    for path in NULLED_FIELDS.get(str(kind), ()):
        parent = _walk(obj, path[:-1])
        if isinstance(parent, dict) and path[-1] in parent:
            parent[path[-1]] = None
    for _, _, entry in env_entries(obj):
        entry["value"] = MASK
    return obj


def contains_mask(obj: dict[str, Any]) -> bool:
    return any(entry.get("value") == MASK for _, _, entry in env_entries(obj))


def unmask(incoming: dict[str, Any], live: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    """Replace masked env values in ``incoming`` by the live cluster's values.

    Returns the object and how many masked values had no live counterpart: such an object must
    not be written, or the literal mask would replace a real secret.
    """
    obj = copy.deepcopy(incoming)
    known: dict[tuple[str, str, str], Any] = {}
    if live is not None:
        for list_name, container, entry in env_entries(live):
            known[(list_name, container, str(entry.get("name", "")))] = entry.get("value")
    missing = 0
    for list_name, container, entry in env_entries(obj):
        if entry.get("value") != MASK:
            continue
        key = (list_name, container, str(entry.get("name", "")))
        if key in known and known[key] != MASK:
            entry["value"] = known[key]
        else:
            missing += 1
    return obj, missing
