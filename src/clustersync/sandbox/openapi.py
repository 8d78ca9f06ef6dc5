"""Minimal OpenAPI v3 documents.

kubectl needs them for two decisions: whether the server supports the
``fieldValidation`` query parameter (it does if the kind appears in the
group-version document; then kubectl skips client-side schema validation,
which would otherwise need full schemas), and how to build apply patches.
Schemas here are deliberately empty objects that preserve unknown fields:
the sandbox does not validate object contents.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import Registry, ResourceType


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(rt: ResourceType) -> str:
    if not rt.group:
        return f"io.k8s.api.core.{rt.version}.{rt.kind}"
    reversed_group = ".".join(reversed(rt.group.split(".")))
    return f"{reversed_group}.{rt.version}.{rt.kind}"


def _hash(group: str, version: str, registry: Registry) -> str:
    names = ",".join(rt.resource for rt in registry.in_group_version(group, version))
    return hashlib.sha256(f"{group}/{version}:{names}".encode()).hexdigest()[:32].upper()


_ACTIONS = {"get": "get", "put": "put", "patch": "patch", "delete": "delete", "post": "post"}


def _operation(rt: ResourceType, verb: str, gvk: dict[str, str]) -> dict[str, Any]:
    # kubectl looks for the fieldValidation parameter on the PATCH operation
    # tagged with the kind's GVK to decide that validation is server-side.
    params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]
    return {
        "operationId": f"{verb}{rt.kind}",
        "parameters": params if verb in ("put", "patch", "post") else [],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": _ACTIONS[verb],
        "x-kubernetes-group-version-kind": gvk,
    }


def openapi_v3_root(registry: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            path = _gv_path(group, version)
            digest = _hash(group, version, registry)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_group_version(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for rt in types:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        schemas[_schema_name(rt)] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [gvk],
        }
        scope = "/namespaces/{namespace}" if rt.namespaced else ""
        paths[f"{rt.base_path}{scope}/{rt.resource}/{{name}}"] = {
            verb: _operation(rt, verb, gvk) for verb in ("get", "put", "patch", "delete")
        }
        paths[f"{rt.base_path}{scope}/{rt.resource}"] = {
            verb: _operation(rt, verb, gvk) for verb in ("get", "post")
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (clustersync sandbox)", "version": "v1.30.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
