"""A small but realistic cluster for the demo: workloads, their pods, nodes, config and CRDs."""

from __future__ import annotations

from typing import Any


def _meta(name: str, namespace: str = "", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **extra}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _pod_spec(image: str, secret: str) -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "main",
                "image": image,
                "env": [
                    {"name": "DB_PASSWORD", "value": secret},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            }
        ]
    }


def demo_objects() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name)}
        for name in ("shop", "kubescape")
    ]
    for i in range(3):
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": _meta(f"node-{i}", labels={"kubernetes.io/os": "linux"}),
                "spec": {"providerID": f"sandbox://node-{i}"},
                "status": {
                    "capacity": {"cpu": "4", "memory": "16Gi"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
    for name, image in (
        ("web", "nginx:1.27"),
        ("api", "shop/api:2.3"),
        ("worker", "shop/worker:2.3"),
    ):
        labels = {"app": name}
        objs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(name, "shop", labels=labels),
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": _pod_spec(image, "s3cr3t"),
                    },
                },
            }
        )
        for r in range(2):  # pods made by the deployment's ReplicaSet: not synced
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": _meta(
                        f"{name}-7d9f-{r}",
                        "shop",
                        labels={**labels, "pod-template-hash": "7d9f"},
                        ownerReferences=[
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": f"{name}-7d9f",
                                "uid": f"rs-{name}",
                                "controller": True,
                            }
                        ],
                    ),
                    "spec": _pod_spec(image, "s3cr3t"),
                }
            )
    objs.append(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta("db", "shop", labels={"app": "db"}),
            "spec": {
                "serviceName": "db",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": _pod_spec("postgres:15", "pg-pass"),
                },
            },
        }
    )
    objs.append(  # a bare pod without owners: synced
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": _meta("debug", "shop"),
            "spec": _pod_spec("busybox:1.36", ""),
        }
    )
    objs.append(  # operator namespace: synced even though a controller owns it
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": _meta(
                "operator-5c6b-0",
                "kubescape",
                labels={"pod-template-hash": "5c6b"},
                ownerReferences=[
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": "operator-5c6b",
                        "uid": "rs-op",
                        "controller": True,
                    }
                ],
            ),
            "spec": _pod_spec("kubescape/operator:1.0", "token"),
        }
    )
    for name in ("shop-settings", "feature-flags"):
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(name, "shop"),
                "data": {"mode": "production", "replicas": "2"},
            }
        )
    objs.append(
        {
            "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
            "kind": "ApplicationProfile",
            "metadata": _meta("replicaset-web-7d9f", "shop"),
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "syscalls": ["read", "write", "openat"],
                        "capabilities": ["NET_BIND_SERVICE"],
                    }
                ]
            },
        }
    )
    objs.append(
        {
            "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
            "kind": "SBOMSyft",
            "metadata": _meta("nginx-1-27", "kubescape"),
            "spec": {
                "syft": {
                    "artifacts": [{"name": "openssl", "version": "3.0.13"}],
                    "descriptor": {"name": "syft", "version": "1.0"},
                    "files": [{"id": "f1", "location": {"path": "/etc/nginx"}}],
                }
            },
        }
    )
    return objs
