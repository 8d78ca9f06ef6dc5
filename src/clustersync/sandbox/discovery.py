"""Discovery documents (legacy, non-aggregated) and ``meta.k8s.io`` Tables.

Only legacy discovery is served: clients that ask for aggregated discovery
(``as=APIGroupDiscoveryList``) see a plain ``application/json`` response
content type and fall back to per-group-version requests, as client-go does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .resources import VERBS, Registry, ResourceType
from .scale import is_scalable

GIT_VERSION = "v1.30.0-sandbox"


def version_info() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "30",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _address() -> list[dict[str, str]]:
    return [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]


def api_versions(registry: Registry) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": registry.group_versions().get("", []),
        "serverAddressByClientCIDRs": _address(),
    }


def api_group(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [
        api_group(group, versions) for group, versions in registry.group_versions().items() if group
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


# Members of the "all" category, so that `kubectl get all` works.
_CATEGORY_ALL = {
    ("", "pods"),
    ("", "services"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
}


def _resource_entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.resource,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(VERBS),
        "storageVersionHash": "",
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if (rt.group, rt.resource) in _CATEGORY_ALL:
        entry["categories"] = ["all"]
    return entry


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources = [_resource_entry(rt) for rt in types]
    # Advertise the status subresource so clients may use it.
    resources += [
        {
            "name": f"{rt.resource}/status",
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ["get", "patch", "update"],
        }
        for rt in types
    ]
    resources += [
        {
            "name": f"{rt.resource}/scale",
            "singularName": "",
            "namespaced": rt.namespaced,
            "group": "autoscaling",
            "version": "v1",
            "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        }
        for rt in types
        if is_scalable(rt)
    ]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# ----- Tables (server-side printing for `kubectl get`) ----------------------

_COLUMNS = [
    {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "Name must be unique within a namespace.",
        "priority": 0,
    },
    {
        "name": "Age",
        "type": "string",
        "format": "",
        "description": "CreationTimestamp of the object.",
        "priority": 0,
    },
]


def wants_table(accept: str) -> bool:
    """kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io``."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if "as=Table" in params and "g=meta.k8s.io" in params and "v=v1" in params:
            return True
    return False


def human_age(timestamp: str | None) -> str:
    """Roughly the apiserver's ``duration.HumanDuration``."""
    if not timestamp:
        return "<unknown>"
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    secs = max(0, int((datetime.now(UTC) - created).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _row(obj: dict[str, Any], include_object: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    embedded: dict[str, Any] | None
    if include_object == "Object":
        embedded = obj
    elif include_object == "None":
        embedded = None
    else:
        embedded = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
        }
    row: dict[str, Any] = {
        "cells": [meta.get("name", ""), human_age(meta.get("creationTimestamp"))],
    }
    if embedded is not None:
        row["object"] = embedded
    return row


def to_table(
    objs: list[dict[str, Any]],
    list_meta: dict[str, Any],
    include_object: str = "Metadata",
    with_columns: bool = True,
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": [_row(o, include_object) for o in objs],
    }
    if with_columns:
        table["columnDefinitions"] = _COLUMNS
    return table
