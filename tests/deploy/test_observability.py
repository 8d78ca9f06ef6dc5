"""The Grafana dashboard and the Prometheus alert rules in deploy/: well formed, and naming only
metrics the code declares (so a renamed metric cannot silently empty a panel or an alert)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

import clustersync.adapters.logthrottle
import clustersync.runtime.backend
import clustersync.runtime.ingest  # noqa: F401  (these declare their metrics on import)
from clustersync.adapters.metrics import METRIC_ROLES

from .project import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "clustersync.json"
METRIC = re.compile(r"\bclustersync_[a-z_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def families(expr: str) -> set[str]:
    """The metric families ``expr`` reads (a histogram's ``_bucket`` is its family)."""
    names = set()
    for found in METRIC.findall(expr):
        bases = [found.removesuffix(s) for s in SUFFIXES if found.endswith(s)]
        names.add(next((b for b in bases if b in METRIC_ROLES), found))
    return names


def balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for ch in expr:
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return not any(depth.values())


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete_and_name_real_metrics() -> None:
    alerts = rules()
    names = {rule["alert"] for rule in alerts}
    assert {
        "ClustersyncClusterDisconnected",
        "ClustersyncDeadLettersRising",
        "ClustersyncSyncLagHigh",
    } <= names
    assert len(names) == len(alerts), "alert names must be unique"
    for rule in alerts:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"], rule
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m")), rule
        assert balanced(rule["expr"]), rule["expr"]
        named = families(rule["expr"])
        assert named, f"{rule['alert']} names no clustersync metric"
        assert named <= set(METRIC_ROLES), f"{rule['alert']}: unknown {named - set(METRIC_ROLES)}"


def test_dashboard_is_valid_and_names_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert balanced(target["expr"]), target["expr"]
            used |= families(target["expr"])
    for variable in dashboard["templating"]["list"]:
        used |= families(str(variable.get("query", "")))
    assert used <= set(METRIC_ROLES), f"unknown metrics: {used - set(METRIC_ROLES)}"
    # The per-cluster gauges this dashboard exists for are all on it.
    assert {
        "clustersync_cluster_connected",
        "clustersync_cluster_objects",
        "clustersync_cluster_sync_lag_seconds",
        "clustersync_cluster_last_message_timestamp_seconds",
        "clustersync_ingest_lag_seconds",
        "clustersync_apply_seconds",
    } <= used


def test_the_checks_catch_an_unknown_metric() -> None:
    assert families("rate(clustersync_no_such_thing_total[5m])") - set(METRIC_ROLES)
    assert not balanced("sum(rate(clustersync_messages_total[5m])")
