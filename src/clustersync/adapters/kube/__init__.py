"""Kubernetes access: a raw-dict client over kubernetes_asyncio's transport, and an informer."""

from clustersync.adapters.kube.base import (
    KubeApi,
    KubeConflictError,
    KubeError,
    KubeGoneError,
    KubeNotFoundError,
    ResourceInfo,
)

__all__ = [
    "KubeApi",
    "KubeConflictError",
    "KubeError",
    "KubeGoneError",
    "KubeNotFoundError",
    "ResourceInfo",
]
