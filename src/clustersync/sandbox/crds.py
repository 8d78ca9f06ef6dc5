"""CustomResourceDefinitions: turning a CRD object into served resource types.

A real API server starts serving a custom resource moments after its CRD is created, and stops
when the CRD is deleted (taking every custom object with it). The sandbox does the same at once:
the store calls :func:`check` before committing a CRD and :func:`served_types` after, and
registers or unregisters the resulting types. Schemas are not enforced (``x-kubernetes-*`` and
OpenAPI validation are out of scope); only what decides the URL paths and kinds is checked.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import SandboxError
from .resources import ResourceType

CRD_GROUP = "apiextensions.k8s.io"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _invalid(name: str, causes: list[tuple[str, str]]) -> SandboxError:
    """The API server's 422 shape: one message joining every cause, and the causes listed."""
    text = ", ".join(f"{field}: {message}" for field, message in causes)
    details = {
        "name": name,
        "group": CRD_GROUP,
        "kind": "CustomResourceDefinition",
        "causes": [
            {"reason": "FieldValueInvalid", "message": message, "field": field}
            for field, message in causes
        ],
    }
    return SandboxError(
        422, "Invalid", f'CustomResourceDefinition.{CRD_GROUP} "{name}" is invalid: {text}', details
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def check(crd: dict[str, Any]) -> None:
    """Raise the API server's 422 for a CRD whose names, scope or versions cannot be served."""
    name = _str(crd.get("metadata", {}).get("name"))
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        raise _invalid(name, [("spec", "Required value")])
    names = spec.get("names")
    if not isinstance(names, dict):
        names = {}
    group, plural, kind = (
        _str(spec.get("group")),
        _str(names.get("plural")),
        _str(names.get("kind")),
    )
    causes: list[tuple[str, str]] = []
    if not group or "." not in group or not _DNS_SUBDOMAIN.match(group):
        causes.append(
            ("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot')
        )
    if not plural or not _DNS_LABEL.match(plural):
        causes.append(
            ("spec.names.plural", f'Invalid value: "{plural}": a lowercase RFC 1123 label')
        )
    if not kind or not _KIND.match(kind):
        causes.append(("spec.names.kind", f'Invalid value: "{kind}": must be a CamelCase name'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", 'Unsupported value: must be "Namespaced" or "Cluster"'))
    if plural and group and name != f"{plural}.{group}":
        causes.append(
            ("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
        )
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(
            (
                "spec.versions",
                "Required value: must have exactly one version marked as storage version",
            )
        )
    else:
        stored = [v for v in versions if isinstance(v, dict) and v.get("storage") is True]
        if len(stored) != 1:
            causes.append(
                (
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version",
                )
            )
        for i, version in enumerate(versions):
            vname = _str(version.get("name")) if isinstance(version, dict) else ""
            if not _DNS_LABEL.match(vname):
                causes.append((f"spec.versions[{i}].name", f'Invalid value: "{vname}"'))
    if causes:
        raise _invalid(name, causes)


def served_types(crd: dict[str, Any]) -> list[ResourceType]:
    """One resource type per served version of a CRD that passed :func:`check`."""
    spec = crd["spec"]
    names = spec["names"]
    short = tuple(s for s in names.get("shortNames") or () if isinstance(s, str))
    return [
        ResourceType(
            spec["group"],
            version["name"],
            names["plural"],
            names["kind"],
            spec["scope"] == "Namespaced",
            short,
        )
        for version in spec["versions"]
        if version.get("served", True)
    ]


def with_status(crd: dict[str, Any], now: str) -> dict[str, Any]:
    """The status a healthy API server reports once a CRD is served (kubectl waits on it)."""
    spec = crd["spec"]
    condition = {"status": "True", "lastTransitionTime": now}
    crd["status"] = {
        "acceptedNames": spec["names"],
        "conditions": [
            {
                **condition,
                "type": "NamesAccepted",
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                **condition,
                "type": "Established",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage") is True],
    }
    return crd
