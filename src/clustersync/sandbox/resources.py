"""Registry of the resource types the sandbox API server knows about.

Every type (built-in or custom) is a plain ``ResourceType`` entry, and discovery documents are
generated from them. CustomResourceDefinitions created at run time add entries (see ``crds``), so
the registry is mutable; the custom types the sandbox starts with are served without a CRD object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Every type supports the full verb set; kubectl decides what it may do
# (e.g. whether `kubectl get` works) from these verbs in discovery.
VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True)
class ResourceType:
    """One served resource, identified by group/version/plural resource."""

    group: str  # "" for the core group
    version: str
    resource: str  # plural, e.g. "pods"
    kind: str  # e.g. "Pod"
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` value objects of this type carry."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def base_path(self) -> str:
        """URL prefix of the group version, without a trailing slash."""
        if self.group:
            return f"/apis/{self.group}/{self.version}"
        return f"/api/{self.version}"


def _rt(
    group: str,
    version: str,
    resource: str,
    kind: str,
    namespaced: bool,
    *short: str,
) -> ResourceType:
    return ResourceType(group, version, resource, kind, namespaced, tuple(short))


_RBAC = "rbac.authorization.k8s.io"
_SPDX = "spdx.softwarecomposition.kubescape.io"

DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", False, "ns"),
    _rt("", "v1", "pods", "Pod", True, "po"),
    _rt("", "v1", "nodes", "Node", False, "no"),
    _rt("", "v1", "configmaps", "ConfigMap", True, "cm"),
    _rt("", "v1", "secrets", "Secret", True),
    _rt("", "v1", "services", "Service", True, "svc"),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", True, "sa"),
    # Not synchronised by anything, but `kubectl describe` lists events.
    _rt("", "v1", "events", "Event", True, "ev"),
    _rt("apps", "v1", "deployments", "Deployment", True, "deploy"),
    _rt("apps", "v1", "statefulsets", "StatefulSet", True, "sts"),
    _rt("apps", "v1", "daemonsets", "DaemonSet", True, "ds"),
    _rt("apps", "v1", "replicasets", "ReplicaSet", True, "rs"),
    _rt("batch", "v1", "jobs", "Job", True),
    _rt("batch", "v1", "cronjobs", "CronJob", True, "cj"),
    _rt(_RBAC, "v1", "roles", "Role", True),
    _rt(_RBAC, "v1", "rolebindings", "RoleBinding", True),
    _rt(_RBAC, "v1", "clusterroles", "ClusterRole", False),
    _rt(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _rt("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "netpol"),
    _rt(_SPDX, "v1beta1", "applicationprofiles", "ApplicationProfile", True),
    _rt(_SPDX, "v1beta1", "sbomsyfts", "SBOMSyft", True),
    _rt(_SPDX, "v1beta1", "networkneighborhoods", "NetworkNeighborhood", True),
    _rt("kubescape.io", "v1alpha1", "operatorcommands", "OperatorCommand", True),
    _rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "crd",
        "crds",
    ),
)


class Registry:
    """Lookup tables over the served resource types."""

    def __init__(self, resources: Iterable[ResourceType]) -> None:
        self.resources: tuple[ResourceType, ...] = ()
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        for rt in resources:
            if (rt.group, rt.version, rt.resource) in self._by_path:
                raise ValueError(f"duplicate resource type {rt.api_version}/{rt.resource}")
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        """Serve ``rt``, replacing a type at the same path (a CRD update may rename kinds)."""
        old = self._by_path.get((rt.group, rt.version, rt.resource))
        if old is not None:
            self.remove(old)
        self.resources = (*self.resources, rt)
        self._by_path[(rt.group, rt.version, rt.resource)] = rt
        self._by_kind[(rt.api_version, rt.kind)] = rt

    def remove(self, rt: ResourceType) -> None:
        self.resources = tuple(r for r in self.resources if r != rt)
        self._by_path.pop((rt.group, rt.version, rt.resource), None)
        if self._by_kind.get((rt.api_version, rt.kind)) == rt:
            del self._by_kind[(rt.api_version, rt.kind)]

    def find(self, group: str, version: str, resource: str) -> ResourceType | None:
        return self._by_path.get((group, version, resource))

    def find_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((api_version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        """Group name -> versions, in registration order (core group is "")."""
        out: dict[str, list[str]] = {}
        for rt in self.resources:
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def in_group_version(self, group: str, version: str) -> Sequence[ResourceType]:
        return [rt for rt in self.resources if rt.group == group and rt.version == version]
