"""Kinds as kubectl users write them: ``configmaps``, ``configmap``, ``ConfigMap``, ``cm``,
``deployments.apps``, ``deployments.v1.apps``, ``apps/v1/deployments`` or ``/v1/configmaps``.

kubectl learns these names from discovery. The backend has no cluster to ask, so a
:class:`KindCatalog` starts from the built-in kinds every cluster serves (names as discovery gives
them) and learns the rest from what agents sync. Resolution is exact first, then case-insensitive;
an unknown name gets the closest known names as a "did you mean", and a name that two groups
share (``events``) asks for the qualified form instead of guessing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from clustersync.model.kinds import Kind, KindError
from clustersync.model.plurals import guess_resource


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: Kind
    kind_name: str  # e.g. "ConfigMap"
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind_name.lower()

    def names(self) -> set[str]:
        """Every unqualified way of writing this kind, lower case."""
        return {self.kind.resource, self.singular, *self.short_names}


def _info(group: str, version: str, kind_name: str, namespaced: bool, *short: str) -> KindInfo:
    return KindInfo(Kind(group, version, guess_resource(kind_name)), kind_name, namespaced, short)


_RBAC = "rbac.authorization.k8s.io"
BUILTIN: tuple[KindInfo, ...] = (
    _info("", "v1", "Namespace", False, "ns"),
    _info("", "v1", "Node", False, "no"),
    _info("", "v1", "Pod", True, "po"),
    _info("", "v1", "ConfigMap", True, "cm"),
    _info("", "v1", "Secret", True),
    _info("", "v1", "Service", True, "svc"),
    _info("", "v1", "ServiceAccount", True, "sa"),
    _info("", "v1", "PersistentVolume", False, "pv"),
    _info("", "v1", "PersistentVolumeClaim", True, "pvc"),
    _info("", "v1", "Endpoints", True, "ep"),
    _info("", "v1", "Event", True, "ev"),
    _info("apps", "v1", "Deployment", True, "deploy"),
    _info("apps", "v1", "StatefulSet", True, "sts"),
    _info("apps", "v1", "DaemonSet", True, "ds"),
    _info("apps", "v1", "ReplicaSet", True, "rs"),
    _info("batch", "v1", "Job", True),
    _info("batch", "v1", "CronJob", True, "cj"),
    _info(_RBAC, "v1", "Role", True),
    _info(_RBAC, "v1", "RoleBinding", True),
    _info(_RBAC, "v1", "ClusterRole", False),
    _info(_RBAC, "v1", "ClusterRoleBinding", False),
    _info("networking.k8s.io", "v1", "NetworkPolicy", True, "netpol"),
    _info("networking.k8s.io", "v1", "Ingress", True, "ing"),
    _info("events.k8s.io", "v1", "Event", True, "ev"),
    _info("apiextensions.k8s.io", "v1", "CustomResourceDefinition", False, "crd", "crds"),
)


class KindCatalog:
    """The kinds a resolver knows, later entries (learned from agents) replacing earlier ones."""

    def __init__(self, infos: Iterable[KindInfo] = BUILTIN) -> None:
        self._infos: dict[Kind, KindInfo] = {}
        for info in infos:
            self.add(info)

    def add(self, info: KindInfo) -> None:
        self._infos[info.kind] = info

    def learn(self, kind: Kind, namespaced: bool | None = None) -> KindInfo:
        """Remember a kind seen in the data (kind name guessed from the resource if unknown)."""
        known = self._infos.get(kind)
        if known is not None and namespaced is None:
            return known
        name = known.kind_name if known else kind.resource.removesuffix("s").capitalize()
        info = KindInfo(kind, name, True if namespaced is None else namespaced,
                        known.short_names if known else ())  # fmt: skip
        self._infos[kind] = info
        return info

    def info(self, kind: Kind) -> KindInfo | None:
        return self._infos.get(kind)

    def resolve(self, text: str) -> KindInfo:
        """The one kind ``text`` names; :class:`KindError` with a suggestion otherwise."""
        text = text.strip()
        if not text:
            raise KindError("no kind given")
        if "/" in text:
            return self._by_path(text)
        name, _, qualifier = text.partition(".")
        candidates = [i for i in self._infos.values() if self._matches(i, name, qualifier)]
        if not candidates and name != name.lower():
            lowered = name.lower()
            candidates = [i for i in self._infos.values() if self._matches(i, lowered, qualifier)]
        core = [c for c in candidates if not c.kind.group]
        if len(candidates) == 1 or len(core) == 1:  # kubectl, too, prefers the core group
            return (core or candidates)[0]
        if candidates:
            forms = sorted(f"{c.kind.resource}.{c.kind.group}" for c in candidates)
            raise KindError(f"kind {text!r} is ambiguous: say which one of {', '.join(forms)}")
        raise KindError(f"unknown kind {text!r}{self._suggest(text)}")

    def _by_path(self, text: str) -> KindInfo:
        parts = text.split("/")
        if len(parts) == 2:  # "v1/configmaps" or "apps/deployments": kubectl's group/version
            group, version, resource = ("", parts[0], parts[1])
            if not any(i.kind.version == version for i in self._infos.values()):
                group, version = parts[0], ""
        elif len(parts) == 3:
            group, version, resource = parts
        else:
            raise KindError(f"kind {text!r} is not group/version/resource{self._suggest(text)}")
        matches = [
            i for i in self._infos.values()
            if i.kind.group == group and (not version or i.kind.version == version)
            and resource.lower() in i.names()
        ]  # fmt: skip
        if len(matches) == 1:
            return matches[0]
        if len(parts) == 3:  # a well-formed triple names a kind the catalog may not know yet
            return self.learn(Kind.parse(text))
        raise KindError(f"unknown kind {text!r}{self._suggest(parts[-1])}")

    @staticmethod
    def _matches(info: KindInfo, name: str, qualifier: str) -> bool:
        if name not in info.names() and name != info.kind_name:
            return False
        if not qualifier:
            return True
        group, version = info.kind.group, info.kind.version
        return qualifier in (group, f"{version}.{group}") or (not group and qualifier == version)

    def _suggest(self, text: str) -> str:
        words = {n for i in self._infos.values() for n in (*i.names(), i.kind_name)}
        close = difflib.get_close_matches(text.lower().partition(".")[0], sorted(words), n=3)
        return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
