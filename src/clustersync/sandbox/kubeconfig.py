"""Kubeconfig files pointing kubectl and client libraries at a sandbox."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def kubeconfig_dict(
    server: str, token: str, ca_pem: bytes | None = None, name: str = "sandbox"
) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
        ],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(
    path: str | Path, server: str, token: str, ca_pem: bytes | None = None
) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kubeconfig_dict(server, token, ca_pem), sort_keys=False))
    target.chmod(0o600)  # kubectl warns about group/world-readable kubeconfigs
