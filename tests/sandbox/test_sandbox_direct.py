"""The synchronous direct API and run_sandbox."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client, config
from sandbox_helpers import cm

import clustersync.sandbox as sandbox_pkg
from clustersync.sandbox import (
    DEFAULT_RESOURCES,
    ResourceType,
    Sandbox,
    SandboxError,
    SeedError,
    run_sandbox,
)

pytestmark = pytest.mark.asyncio

CM = ("", "v1", "configmaps")


async def test_direct_crud_semantics() -> None:
    sb = Sandbox()
    created = sb.create(cm("d1"))
    assert created["metadata"]["resourceVersion"] == str(sb.resource_version)
    created["data"]["k"] = "mutated-locally"  # returned objects are copies
    got = sb.get(*CM, "default", "d1")
    assert got is not None and got["data"] == {"k": "d1"}

    with pytest.raises(SandboxError) as err:
        sb.create(cm("d1"))
    assert (err.value.status, err.value.reason) == (409, "AlreadyExists")

    stale = dict(got, metadata=dict(got["metadata"], resourceVersion="1"))
    with pytest.raises(SandboxError) as err:
        sb.replace(stale)
    assert err.value.status == 409 and err.value.reason == "Conflict"

    got["data"] = {"k": "new"}
    replaced = sb.replace(got)
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    patched = sb.patch(*CM, "default", "d1", {"metadata": {"labels": {"x": "1"}}})
    assert patched["metadata"]["labels"] == {"x": "1"}
    assert [o["metadata"]["name"] for o in sb.list(*CM)] == ["d1"]
    assert sb.list(*CM, "kube-system") == []

    sb.delete(*CM, "default", "d1")
    with pytest.raises(SandboxError) as err:
        sb.delete(*CM, "default", "d1")
    assert (err.value.status, err.value.reason) == (404, "NotFound")
    with pytest.raises(SandboxError):
        sb.create({"apiVersion": "v9", "kind": "Unknown", "metadata": {"name": "u"}})


async def test_custom_resource_set_and_thread_access() -> None:
    widgets = ResourceType("example.com", "v1", "widgets", "Widget", True, ("wd",))
    assert widgets.list_kind == "WidgetList"
    sb = Sandbox([*DEFAULT_RESOURCES, widgets], token="t0k")
    await sb.start()
    try:
        # Calls from another thread are marshalled onto the server loop.
        obj = await asyncio.to_thread(
            sb.create,
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
        )
        assert obj["metadata"]["namespace"] == "default"
        assert sb.get("example.com", "v1", "widgets", "default", "w") is not None
    finally:
        await sb.stop()


def _subprocess_env() -> dict[str, str]:
    src = str(Path(sandbox_pkg.__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


async def test_run_sandbox_cli_with_seed(tmp_path: Path) -> None:
    """``python -m clustersync.sandbox`` = run_sandbox: seed, kubeconfig, one line."""
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seeded, namespace: team-a}\n"
        "---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n"
    )
    kubeconfig = tmp_path / "kc.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clustersync.sandbox",
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
        "--seed",
        str(seed),
        stdout=asyncio.subprocess.PIPE,
        env=_subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("sandbox serving on http://127.0.0.1:")
        assert line.rstrip().endswith(f"kubeconfig {kubeconfig}")
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert server.startswith("https://127.0.0.1:")

        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(configuration=cfg) as api:
            cms = await client.CoreV1Api(api).list_namespaced_config_map("team-a")
            assert [c.metadata.name for c in cms.items] == ["seeded"]
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0


async def test_run_sandbox_bad_seed(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("kind: Pod\n")
    with pytest.raises(SeedError, match="missing apiVersion"):
        await run_sandbox(0, str(tmp_path / "kc"), str(seed))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clustersync.sandbox",
        "--kubeconfig",
        str(tmp_path / "kc"),
        "--seed",
        str(seed),
        stderr=asyncio.subprocess.PIPE,
        env=_subprocess_env(),
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2 and err.decode().count("\n") == 1


async def test_streamed_seed_takes_a_namespace_listed_after_its_objects() -> None:
    """A seed file is created in its order; a Namespace it lists after objects in it replaces
    the bare one made for them, while namespaces that existed before are left alone."""
    sb = Sandbox()

    def namespace(name: str, label: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"x": label}},
        }

    seed = [cm("early", "team-b"), namespace("team-b", "1"), namespace("default", "2")]
    assert sb.load(iter(seed)) == 2
    team = sb.get("", "v1", "namespaces", "", "team-b")
    assert team is not None and team["metadata"]["labels"] == {"x": "1"}
    default = sb.get("", "v1", "namespaces", "", "default")
    assert default is not None and "labels" not in default["metadata"]
    assert [o["metadata"]["name"] for o in sb.list(*CM, "team-b")] == ["early"]


async def test_last_change_is_per_type_and_survives_compaction() -> None:
    """What a watcher of a type must reach to have seen all of it (tests wait on it)."""
    sb = Sandbox()
    assert sb.last_change(*CM) == 0
    sb.create(cm("a"))
    created = sb.create(cm("b"))
    sb.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}})
    assert sb.last_change(*CM) == int(created["metadata"]["resourceVersion"])
    assert sb.last_change("", "v1", "namespaces") == sb.resource_version  # the newest change
    sb.delete(*CM, "default", "a")  # a deletion is a change at a version of its own
    deleted_at = sb.resource_version
    assert sb.last_change(*CM) == deleted_at
    sb.compact()
    assert sb.last_change(*CM) == deleted_at
    assert sb.last_change("example.com", "v1", "unserved") == 0
