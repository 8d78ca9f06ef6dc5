"""What the agent sends of an object, and which objects it sends at all (reference 3.5, 3.6).

Objects are filtered by namespace rules and by ownership (controller-owned Pods, Jobs and
ReplicaSets would only duplicate their owner), stripped of server bookkeeping that changes without
meaning, and have container env values masked so secrets never leave the cluster.
"""

from __future__ import annotations

import copy
import operator
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from clustersync.model import Kind
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION

MASK = "XXXXXX"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_STRIPPED_ANNOTATIONS = (LAST_APPLIED, CHECKSUM_ANNOTATION)
_OWNED_KINDS = frozenset({"Pod", "Job", "ReplicaSet"})
_CONTROLLER_API_VERSIONS = frozenset({"apps/v1", "batch/v1", "batch/v1beta1"})
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

STORAGE_GROUP = "spdx.softwarecomposition.kubescape.io"
# Kinds kubescape's agent reads through the typed storage client: their objects are only stripped
# of managedFields and annotations, never nulled or masked.
TYPED_STORAGE_RESOURCES = frozenset(
    {
        "applicationprofiles",
        "networkneighborhoods",
        "sbomsyfts",
        "seccompprofiles",
        "vulnerabilitymanifests",
    }
)

# Fields set to null (not removed) before hashing, per kind: they churn without meaning. Missing
# parents are created, so a Node without status is sent with "status": {"conditions": null}.
# The sbomsyfts entry is kubescape's; it never applies there, as that kind is typed (above).
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


class ShapingError(ValueError):
    """An object kubescape refuses to shape (a nulled field under a parent that is not a map)."""


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


def _owned(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The dict at ``path``, after replacing every dict on the way by a shallow copy of itself."""
    node = obj
    for key in path:
        child = node.get(key)
        if not isinstance(child, dict):
            return None
        child = dict(child)
        node[key] = child
        node = child
    return node


def _masked_container(container: Any, values: list[Any] | None) -> Any:
    if not isinstance(container, dict) or not isinstance(container.get("env"), list):
        return container
    env = []
    for entry in container["env"]:
        if isinstance(entry, dict) and "value" in entry:
            if values is not None:
                values.append(entry["value"])
            entry = {**entry, "value": MASK}  # noqa: PLW2901 - the masked copy replaces it
        env.append(entry)
    return {**container, "env": env}


def _mask_env(obj: dict[str, Any], values: list[Any] | None) -> None:
    """Mask every env value (in :func:`env_entries` order), adding the originals to ``values``."""
    spec = _owned(obj, pod_spec_path(str(obj.get("kind", ""))))
    if spec is None:
        return
    for list_name in _CONTAINER_LISTS:
        containers = spec.get(list_name)
        if not isinstance(containers, list):
            continue
        spec[list_name] = [_masked_container(c, values) for c in containers]


def shape(kind: Kind, live: dict[str, Any]) -> dict[str, Any]:
    """``live`` as kubescape's agent sends it: stripped, nulled and masked (reference 3.6).

    Raises :class:`ShapingError` where kubescape cannot shape the object (it then sends nothing).
    Only the containers on the paths that change are copied; the rest is shared with ``live``
    (a deep copy cost more than the checksum). Neither object may be mutated afterwards.
    """
    return _shape(kind, live, None)


def _shape(kind: Kind, live: dict[str, Any], env_values: list[Any] | None) -> dict[str, Any]:
    obj = dict(live)
    meta = _owned(obj, ("metadata",))
    if meta is not None:
        meta.pop("managedFields", None)
        _strip_annotations(meta)
    if kind.group == STORAGE_GROUP and kind.resource in TYPED_STORAGE_RESOURCES:
        # kubescape reads these through its typed storage client: no nulling, no masking.
        return obj
    for path in NULLED_FIELDS.get(str(kind), ()):
        _parent_for_null(obj, path)[path[-1]] = None
    _mask_env(obj, env_values)
    return obj


Removed = dict[str, Any]
"""What :func:`lend_shaped` took away: ``env`` (the masked values, in :func:`env_entries`
order) and ``annotations`` (the stripped ones), each only if there were any."""

_VALUE = "value"
_value_of = operator.itemgetter(_VALUE)
_has_value = operator.methodcaller("__contains__", _VALUE)
_ONLY_DICTS = frozenset({dict})
_ONLY_STRINGS = frozenset({str})


@dataclass(slots=True)
class Loan:
    """A live object shaped for a moment (see :func:`lend_shaped`): ``shaped`` is valid until
    :meth:`give_back`, which must run before anything else reads the live object."""

    shaped: dict[str, Any]
    removed: Removed
    _masked: list[dict[str, Any]]  # the live object's env entries whose values are masked
    _values: list[Any]  # their values, in the same order

    def give_back(self) -> None:
        """Put the masked env values back into the live object (the loan ends)."""
        _set_values(self._masked, self._values)
        self._masked = self._values = []


def _set_values(entries: list[dict[str, Any]], values: Iterable[Any]) -> None:
    # map() drives the stores from C: a Python loop over every env entry cost more than the
    # rest of shaping (the deque of length 0 only consumes it).
    deque(map(operator.setitem, entries, repeat(_VALUE), values), maxlen=0)


def lend_shaped(kind: Kind, live: dict[str, Any]) -> Loan | None:
    """:func:`shape` and what it removed, so that :func:`restore` can rebuild ``live`` from the
    two; None where shaping loses more than that (annotations that are null, not strings or
    not a map, and nulled fields), or raises :class:`ShapingError` as :func:`shape` does.

    Why a loan: copying every container and env entry to mask the values was most of the cost
    of shaping (each list page object is shaped once, when it arrives). Here the env values are
    masked in ``live``'s own entries, and :meth:`Loan.give_back` puts them back; the rest is
    shared or shallow-copied as :func:`shape` does. ``live`` reads masked until then.
    """
    meta = live.get("metadata")
    if not isinstance(meta, dict):
        meta = None
    removed: Removed = {}
    annotations = None
    if meta is not None and "annotations" in meta:
        annotations = meta["annotations"]
        if not isinstance(annotations, dict) or not _ONLY_STRINGS.issuperset(
            map(type, annotations.values())
        ):
            return None  # shaping would drop the map or turn nulls into "": not undoable
        if LAST_APPLIED in annotations or CHECKSUM_ANNOTATION in annotations:
            removed["annotations"] = {
                key: annotations[key] for key in _STRIPPED_ANNOTATIONS if key in annotations
            }
    typed = kind.group == STORAGE_GROUP and kind.resource in TYPED_STORAGE_RESOURCES
    if not typed and NULLED_FIELDS.get(str(kind)):
        return None
    shaped = dict(live)
    if meta is not None and ("managedFields" in meta or "annotations" in removed):
        shaped["metadata"] = meta = dict(meta)
        meta.pop("managedFields", None)
        if annotations is not None and "annotations" in removed:
            meta["annotations"] = {
                key: value
                for key, value in annotations.items()
                if key not in _STRIPPED_ANNOTATIONS
            }
    if typed:
        return Loan(shaped, removed, [], [])
    masked = _env_entries_with_values(shaped)
    # Every value is read before any is masked: an entry reached twice (one dict shared by two
    # containers) gives its own value both times, as the copying shape() does.
    values = list(map(_value_of, masked))
    _set_values(masked, repeat(MASK))
    if values:
        removed["env"] = values
    return Loan(shaped, removed, masked, values)


def _env_entries_with_values(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The env entries :func:`env_entries` yields, in its order (just the entries)."""
    found: list[dict[str, Any]] = []
    spec = _walk(obj, pod_spec_path(str(obj.get("kind", ""))))
    if not isinstance(spec, dict):
        return found
    for list_name in _CONTAINER_LISTS:
        containers = spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for container in containers:
            env = container.get("env") if isinstance(container, dict) else None
            if not isinstance(env, list):
                continue
            if _ONLY_DICTS.issuperset(map(type, env)):
                found += filter(_has_value, env)  # the usual case, tested from C
            else:
                found += [e for e in env if isinstance(e, dict) and _VALUE in e]
    return found


def restore(kind: Kind, shaped: dict[str, Any], removed: Removed) -> None:
    """Put back into ``shaped`` (a fresh copy, changed in place) what :func:`lend_shaped`
    removed from the live object. Raises ValueError if ``removed`` does not fit it."""
    stripped = removed.get("annotations")
    if stripped:
        meta = shaped.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        if not isinstance(annotations, dict) or not isinstance(stripped, dict):
            raise ValueError("removed annotations without an annotations map to restore into")
        annotations.update(stripped)
    values = removed.get("env")
    if values:
        entries = [entry for _, _, entry in env_entries(shaped)]
        if not isinstance(values, list) or len(values) != len(entries):
            raise ValueError(f"{len(entries)} masked env values, {len(values)} removed")
        for entry, value in zip(entries, values, strict=True):
            entry["value"] = value


def _strip_annotations(meta: dict[str, Any]) -> None:
    """Go reads annotations as a string map: null values become "", a map it cannot read (null,
    not an object, a non-string value) counts as absent and is removed, and a map emptied by the
    stripping stays as ``{}``. Each of these changes the checksum, so we do the same."""
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict) or not all(
        value is None or isinstance(value, str) for value in annotations.values()
    ):
        meta.pop("annotations", None)
        return
    meta["annotations"] = {
        key: "" if value is None else value
        for key, value in annotations.items()
        if key not in _STRIPPED_ANNOTATIONS
    }


def _parent_for_null(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The (copied) parent of a field to null, created where missing as Go's ``SetNestedField``
    does; a parent that exists but is not an object is an error there, and here."""
    node = obj
    for depth, key in enumerate(path[:-1]):
        child = node.get(key, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise ShapingError(f"cannot null {'.'.join(path)}: .{where} is not an object")
        child = dict(child)
        node[key] = child
        node = child
    return node


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
