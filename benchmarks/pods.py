"""Realistic pod objects (about 5-7 KB each) for benchmarks."""

from __future__ import annotations

from typing import Any


def pod(i: int, namespace: str = "bench") -> dict[str, Any]:
    containers = [
        {
            "name": f"c{c}",
            "image": f"registry.example.com/team/service-{i % 50}:{c}.{i % 7}.0",
            "args": ["--port=8080", "--log-level=info", f"--shard={i % 16}"],
            "env": [{"name": f"VAR_{k}", "value": f"value-{i}-{k}"} for k in range(8)],
            "ports": [{"containerPort": 8080 + c, "protocol": "TCP", "name": f"http{c}"}],
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
            "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "config", "mountPath": "/etc/config", "readOnly": True},
            ],
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": 8080},
                "periodSeconds": 10,
                "timeoutSeconds": 2,
            },
        }
        for c in range(2)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod-{i:06d}",
            "namespace": namespace,
            "labels": {"app": f"service-{i % 50}", "tier": "backend", "release": "stable"},
            "annotations": {
                "prometheus.io/scrape": "true",
                "team": "payments",
                "description": "x" * 2200,
            },
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {}}},
                }
            ],
        },
        "spec": {
            "containers": containers,
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "config", "configMap": {"name": f"cfg-{i % 50}"}},
            ],
            "nodeName": f"node-{i % 20}",
            "serviceAccountName": "default",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.{i % 256}.{(i // 256) % 256}.{i % 200}",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-11-01T00:00:00Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                {
                    "name": f"c{c}",
                    "ready": True,
                    "restartCount": 0,
                    "image": f"registry.example.com/team/service-{i % 50}:{c}",
                    "state": {"running": {"startedAt": "2026-11-01T00:00:00Z"}},
                }
                for c in range(2)
            ],
        },
    }
