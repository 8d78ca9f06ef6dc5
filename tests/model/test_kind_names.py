"""Kinds written the ways kubectl users write them."""

from __future__ import annotations

import pytest

from clustersync.model import Kind, KindError
from clustersync.model.kind_names import KindCatalog, KindInfo

CONFIGMAPS = Kind("", "v1", "configmaps")
DEPLOYMENTS = Kind("apps", "v1", "deployments")
PROFILES = Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "applicationprofiles")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("configmaps", CONFIGMAPS),
        ("configmap", CONFIGMAPS),
        ("ConfigMap", CONFIGMAPS),
        ("cm", CONFIGMAPS),
        ("CM", CONFIGMAPS),
        ("/v1/configmaps", CONFIGMAPS),
        ("v1/configmaps", CONFIGMAPS),
        ("deploy", DEPLOYMENTS),
        ("Deployment", DEPLOYMENTS),
        ("deployments.apps", DEPLOYMENTS),
        ("deployments.v1.apps", DEPLOYMENTS),
        ("apps/v1/deployments", DEPLOYMENTS),
        ("networkpolicies", Kind("networking.k8s.io", "v1", "networkpolicies")),
        ("events", Kind("", "v1", "events")),  # the core group wins, as in kubectl
        ("events.events.k8s.io", Kind("events.k8s.io", "v1", "events")),
    ],
)
def test_every_kubectl_form_resolves(text: str, kind: Kind) -> None:
    assert KindCatalog().resolve(text).kind == kind


def test_kinds_learned_from_agents_resolve_by_name() -> None:
    catalog = KindCatalog()
    catalog.add(KindInfo(PROFILES, "ApplicationProfile", True, ("ap",)))
    for text in ("applicationprofiles", "ApplicationProfile", "ap",
                 "applicationprofiles.spdx.softwarecomposition.kubescape.io"):
        assert catalog.resolve(text).kind == PROFILES


def test_an_unknown_kind_suggests_the_closest_names() -> None:
    with pytest.raises(KindError, match=r"unknown kind 'confgmaps'; did you mean 'configmaps'"):
        KindCatalog().resolve("confgmaps")
    with pytest.raises(KindError, match=r"unknown kind 'v1/confimaps'.*'configmaps'"):
        KindCatalog().resolve("v1/confimaps")


def test_a_name_two_groups_share_asks_which() -> None:
    catalog = KindCatalog()
    catalog.add(KindInfo(Kind("a.example.com", "v1", "widgets"), "Widget", True))
    catalog.add(KindInfo(Kind("b.example.com", "v1", "widgets"), "Widget", True))
    with pytest.raises(KindError, match=r"ambiguous.*widgets.a.example.com, widgets.b.example.com"):
        catalog.resolve("widget")
    assert catalog.resolve("widgets.b.example.com").kind.group == "b.example.com"


def test_a_full_triple_names_a_kind_the_catalog_never_saw() -> None:
    info = KindCatalog().resolve("example.com/v1/gadgets")
    assert info.kind == Kind("example.com", "v1", "gadgets") and info.namespaced


def test_namespaced_is_known_for_builtins() -> None:
    catalog = KindCatalog()
    assert catalog.resolve("cm").namespaced and not catalog.resolve("ns").namespaced
    assert not catalog.resolve("clusterroles").namespaced


@pytest.mark.parametrize("text", ["", "a/b/c/d", "v1/", "///"])
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises(KindError):
        KindCatalog().resolve(text)
