"""The ``clustersync`` command end to end: real backend, sandbox and agent processes on loopback."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from clustersync.adapters.kube.client import KubeClient
from clustersync.model import Kind, ObjectRef

from .clitools import Process, free_port, run_cli, wait_until
from .conftest import (
    ACCOUNT,
    ADMIN_TOKEN,
    AGENT_TOKEN,
    CLUSTER,
    Backend,
    Cluster,
    start_backend,
    write_agent_config,
    write_tokens,
)

CONFIGMAPS = Kind("", "v1", "configmaps")
KUBECTL = shutil.which("kubectl")
CHECKSUM = re.compile(r"^cs1:[0-9a-f]{64}$")  # our agent and backend agree on fast digests


def admin(backend: Backend) -> list[str]:
    return ["--backend", backend.url, "--token", ADMIN_TOKEN]


def target() -> list[str]:
    return ["--account", ACCOUNT, "--cluster", CLUSTER]


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


async def backend_objects(backend: Backend) -> dict[tuple[str, str, str], dict[str, Any]]:
    """What the backend holds, read through its HTTP API: (kind, namespace, name) -> row."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{backend.url}/api/v1/objects",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            params={"full": "1"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        doc = await response.json()
    return {(i["kind"], i["namespace"], i["name"]): i for i in doc["items"]}


async def wait_backend_holds(backend: Backend, key: tuple[str, str, str], present: bool = True,
                             data: dict[str, str] | None = None) -> None:
    async def check() -> bool:
        row = (await backend_objects(backend)).get(key)
        if not present:
            return row is None
        return row is not None and (data is None or row["object"].get("data") == data)

    await wait_until(check, f"backend to {'hold' if present else 'drop'} {key}")


async def kube_create(cluster: Cluster, obj: dict[str, Any]) -> None:
    kube = await KubeClient.connect(str(cluster.kubeconfig))
    try:
        meta = obj["metadata"]
        await kube.create(ObjectRef(CONFIGMAPS, meta["namespace"], meta["name"]), obj)
    finally:
        await kube.close()


async def cluster_configmap(cluster: Cluster, name: str, namespace: str = "default") -> Any:
    """The configmap as the cluster serves it (kubectl if available), or None if absent."""
    if KUBECTL is None:
        kube = await KubeClient.connect(str(cluster.kubeconfig))
        try:
            return await kube.get(ObjectRef(CONFIGMAPS, namespace, name))
        finally:
            await kube.close()
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "get", "configmap", name,
        "-n", namespace, "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    if proc.returncode == 0:
        return json.loads(out)
    assert b"NotFound" in err, err.decode()
    return None


async def wait_synced(backend: Backend) -> None:
    """The agent is connected and announced its cluster: the default namespace is held."""
    await wait_backend_holds(backend, ("/v1/namespaces", "", "default"))


# ---------------------------------------------------------------- the happy paths


def parse_table(stdout: str) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of a kubectl-style table, cut at the header's column offsets (so an empty
    NAMESPACE cell stays a cell); checks every cell starts at its column."""
    lines = stdout.splitlines()
    columns = list(re.finditer(r"\S+", lines[0]))
    header = [column.group() for column in columns]
    starts = [column.start() for column in columns]
    rows = []
    for line in lines[1:]:
        for start in starts[1:]:
            assert line[start - 1] == " " and line[start] != " ", f"misaligned: {stdout}"
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(header, cells, strict=True)))
    return header, rows


async def test_objects_lists_what_the_agent_synced(
    backend: Backend, cluster: Cluster, agent: Process
) -> None:
    await kube_create(cluster, configmap("hello", greeting="hi"))
    await kube_create(cluster, configmap("hidden", "kube-system"))  # an excluded namespace
    await wait_synced(backend)
    await wait_backend_holds(backend, ("/v1/configmaps", "default", "hello"))

    table = await run_cli("objects", *admin(backend))
    assert table.code == 0, table.stderr
    assert table.stderr == ""
    header, rows = parse_table(table.stdout)
    assert header == ["NAMESPACE", "NAME", "KIND", "CLUSTER", "AGE"]
    by_key = {(row["KIND"], row["NAMESPACE"], row["NAME"]): row for row in rows}
    hello = by_key[("configmaps", "default", "hello")]
    assert hello["CLUSTER"] == f"{ACCOUNT}/{CLUSTER}"
    assert re.fullmatch(r"[0-9]+[smhd]", hello["AGE"]), hello
    assert ("namespaces", "", "default") in by_key  # cluster-scoped: no namespace
    assert ("configmaps", "kube-system", "hidden") not in by_key

    full = await run_cli("objects", *admin(backend), "-o", "json")
    assert full.code == 0, full.stderr
    items = json.loads(full.stdout)
    assert len(items) == len(rows)
    doc = next(i for i in items if i["kind"] == "/v1/configmaps" and i["name"] == "hello")
    assert doc["object"]["data"] == {"greeting": "hi"}
    assert doc["object"]["metadata"]["name"] == "hello"
    assert CHECKSUM.match(doc["checksum"])
    assert (doc["account"], doc["cluster"], doc["namespace"]) == (ACCOUNT, CLUSTER, "default")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["updatedAt"]), doc
    stored = datetime.datetime.fromisoformat(doc["updatedAt"]).timestamp()
    assert abs(stored - time.time()) < 300  # stored during this test, in UTC

    as_yaml = await run_cli("objects", *admin(backend), "-o", "yaml")
    assert as_yaml.code == 0, as_yaml.stderr
    assert yaml.safe_load(as_yaml.stdout) == items

    wide = await run_cli("objects", *admin(backend), "-o", "wide")
    header, wide_rows = parse_table(wide.stdout)
    assert header[-2:] == ["CHECKSUM", "RESOURCE-VERSION"]
    hello_wide = next(r for r in wide_rows if r["NAME"] == "hello")
    assert hello_wide["CHECKSUM"] == doc["checksum"][:12]
    assert hello_wide["RESOURCE-VERSION"] == doc["resourceVersion"]

    named = await run_cli("objects", *admin(backend), "-o", "name")
    assert "configmaps/hello" in named.stdout.splitlines()
    assert "namespaces/default" in named.stdout.splitlines()

    expected_cms = {("default", "hello")}
    for kind_args in (["cm"], ["configmaps"], ["--kind", "ConfigMap"], ["v1/configmaps"],
                      ["--kind", "/v1/configmaps"]):
        narrowed = await run_cli("objects", *admin(backend), *kind_args, "-n", "default")
        assert narrowed.code == 0, (kind_args, narrowed.stderr)
        _, cms = parse_table(narrowed.stdout)
        assert {(r["NAMESPACE"], r["NAME"]) for r in cms} == expected_cms, kind_args
        assert {r["KIND"] for r in cms} == {"configmaps"}

    one = await run_cli("objects", *admin(backend), "namespaces", "kube-public", "-o", "name")
    assert one.stdout == "namespaces/kube-public\n", one

    await kube_create(cluster, {**configmap("labelled"), "metadata": {
        "name": "labelled", "namespace": "default", "labels": {"app": "web"}}})
    await wait_backend_holds(backend, ("/v1/configmaps", "default", "labelled"))
    selected = await run_cli("objects", *admin(backend), "-A", "-l", "app=web", "-o", "name")
    assert selected.stdout == "configmaps/labelled\n", selected

    unknown = await run_cli("objects", *admin(backend), "configmapz")
    assert unknown.code == 2, unknown
    assert "did you mean" in unknown.error_line() and "configmaps" in unknown.error_line()

    other = await run_cli("objects", *admin(backend), "--account", "someone-else")
    assert other.code == 0, other.stderr
    assert (other.stdout, other.stderr) == ("", "No objects found.\n")
    mine = await run_cli("objects", *admin(backend), *target(), "-o", "json")
    assert len(json.loads(mine.stdout)) == len(rows) + 1  # and the labelled one


async def test_push_then_delete_through_the_backend(
    backend: Backend, cluster: Cluster, agent: Process, tmp_path: Path
) -> None:
    await wait_synced(backend)
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(yaml.safe_dump(configmap("pushed-cm", command="scan", n="1")))

    pushed = await run_cli("push", str(manifest), *admin(backend), *target())
    assert pushed.code == 0, pushed.stderr
    assert re.match(
        r"^accepted ConfigMap default/pushed-cm \(write [0-9a-f-]{36}\)$", pushed.stdout.strip()
    )

    async def in_cluster() -> bool:
        return await cluster_configmap(cluster, "pushed-cm") is not None

    await wait_until(in_cluster, "the pushed configmap in the cluster")
    live = await cluster_configmap(cluster, "pushed-cm")
    assert live["data"] == {"command": "scan", "n": "1"}
    assert live["metadata"]["namespace"] == "default"
    await wait_backend_holds(backend, ("/v1/configmaps", "default", "pushed-cm"),
                             data={"command": "scan", "n": "1"})

    # As kubectl takes it: a short name, and no namespace means "default".
    deleted = await run_cli("delete", "cm", "pushed-cm", *admin(backend), *target())
    assert deleted.code == 0, deleted.stderr
    assert deleted.stdout.startswith("accepted delete of cm pushed-cm")

    async def gone() -> bool:
        return await cluster_configmap(cluster, "pushed-cm") is None

    await wait_until(gone, "the deleted configmap to leave the cluster")
    await wait_backend_holds(backend, ("/v1/configmaps", "default", "pushed-cm"), present=False)


async def test_push_a_multi_document_file(
    backend: Backend, cluster: Cluster, agent: Process, tmp_path: Path
) -> None:
    await wait_synced(backend)
    manifest = tmp_path / "many.yaml"
    no_namespace = configmap("multi-2", i="2")
    del no_namespace["metadata"]["namespace"]  # kubectl apply puts it in "default"
    manifest.write_text(yaml.safe_dump_all([configmap("multi-1", i="1"), no_namespace]))
    pushed = await run_cli("push", str(manifest), *admin(backend), *target())
    assert pushed.code == 0, pushed.stderr
    lines = pushed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("accepted ConfigMap default/multi-2 "), lines

    async def both() -> bool:
        return all([await cluster_configmap(cluster, f"multi-{i}") is not None for i in (1, 2)])

    await wait_until(both, "both pushed configmaps in the cluster")


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_long_running_commands_exit_cleanly_on_signals(
    backend: Backend, cluster: Cluster, agent: Process, signum: int
) -> None:
    await wait_synced(backend)
    for process in (agent, backend.process, cluster.process):
        started = time.monotonic()
        code = await process.signal(signum, timeout=10)
        assert code == 0, process.describe()
        assert time.monotonic() - started < 5, process.describe()
        assert "Traceback" not in process.stderr, process.describe()
        assert "error:" not in process.stderr, process.describe()


async def test_backend_keeps_data_across_a_sigterm_restart(tmp_path: Path) -> None:
    first = await start_backend(tmp_path, "durable")
    try:
        manifest = tmp_path / "cm.yaml"
        manifest.write_text(yaml.safe_dump(configmap("kept", v="1")))
        pushed = await run_cli("push", str(manifest), *admin(first), *target())
        assert pushed.code == 0, pushed.stderr
        # Backend writes are stored as well as forwarded, even with no agent connected.
        await wait_backend_holds(first, ("/v1/configmaps", "default", "kept"), data={"v": "1"})
        assert await first.process.signal(signal.SIGTERM) == 0, first.process.describe()
    finally:
        await first.process.stop()
    second = await start_backend(tmp_path, "durable")  # same database file
    try:
        listed = await run_cli("objects", *admin(second), "-o", "json")
        assert listed.code == 0, listed.stderr
        assert [(i["name"], i["object"]["data"]) for i in json.loads(listed.stdout)] == [
            ("kept", {"v": "1"})
        ]
    finally:
        await second.process.stop()


# ---------------------------------------------------------------- error paths


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["objects", "--backend", "http://127.0.0.1:1"], "--token"),
        (["push", "--backend", "http://x", "--token", "t"], "required"),
        (["delete", "cm", "default/", "--backend", "http://x", "--token", "t",
          "--account", "a", "--cluster", "c"], "names no object"),
        (["delete", "cm", "a/x", "-n", "b", "--backend", "http://x", "--token", "t",
          "--account", "a", "--cluster", "c"], "two namespaces"),
        (["objects", "--token", "t"], "--backend URL (or $CLUSTERSYNC_BACKEND)"),
        (["objects", "--backend", "http://x"], "--token (or $CLUSTERSYNC_TOKEN)"),
        (["objects", "--backend", "http://x", "--token", "t", "-A", "-n", "x"], "exclude"),
        (["objects", "--backend", "http://x", "--token", "t", "cm", "a", "b"], "at most"),
        (["objects", "--backend", "http://x", "--token", "t", "--log-level", "loud"],
         "invalid choice"),
        (["objects", "--backend", "https://x", "--token", "t", "--ca-file", "/nonexistent"],
         "--ca-file"),
        (["backend", "--tokens", "t.yaml", "--listen", "no-port-here"], "HOST:PORT"),
        (["objects", "--backend", "http://x", "--token", "t", "-o", "xml"], "invalid choice"),
        (["no-such-command"], "invalid choice"),
        ([], "required"),
    ],
)
async def test_bad_arguments(args: list[str], needle: str) -> None:
    result = await run_cli(*args)
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert needle in result.stderr


async def test_push_of_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = await run_cli("push", str(missing), "--backend", "http://127.0.0.1:1",
                           "--token", ADMIN_TOKEN, *target())
    assert result.code == 2, result
    line = result.error_line()
    assert "cannot read" in line and str(missing) in line
    assert result.stderr.strip() == line


@pytest.mark.parametrize(
    ("content", "needle"),
    [("key: [unclosed\n", "not YAML"), ("", "no Kubernetes objects"),
     ("- 1\n- 2\n", "no Kubernetes objects"), ("just text\n", "no Kubernetes objects")],
)
async def test_push_of_a_bad_file(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = await run_cli("push", str(path), "--backend", "http://127.0.0.1:1",
                           "--token", ADMIN_TOKEN, *target())
    assert result.code == 2, result
    assert needle in result.error_line()


async def test_wrong_admin_token_is_refused(backend: Backend, tmp_path: Path) -> None:
    result = await run_cli("objects", "--backend", backend.url, "--token", "not-a-known-token")
    assert result.code == 1, result
    line = result.error_line()
    assert "401" in line
    assert result.stderr.strip() == line

    # An agent's token is known but may not use the operator API.
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(yaml.safe_dump(configmap("refused")))
    result = await run_cli("push", str(manifest), "--backend", backend.url,
                           "--token", AGENT_TOKEN, *target())
    assert result.code == 1, result
    assert "403" in result.error_line()


async def test_unreachable_backend() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (
        ["objects", "--backend", url, "--token", ADMIN_TOKEN],
        ["delete", "/v1/configmaps", "default/x", "--backend", url, "--token", ADMIN_TOKEN,
         *target()],
    ):
        result = await run_cli(*args)
        assert result.code == 1, result
        line = result.error_line()
        assert "cannot reach the backend" in line and url in line
        assert result.stderr.strip() == line


async def test_agent_with_a_bad_access_key_exits(
    backend: Backend, cluster: Cluster, tmp_path: Path
) -> None:
    config = write_agent_config(
        tmp_path / "bad-agent.yaml", backend.url, cluster.kubeconfig,
        access_key="this-key-is-wrong",
    )
    started = time.monotonic()
    result = await run_cli("agent", "--config", str(config), timeout=15)
    assert result.code == 1, result
    assert time.monotonic() - started < 10
    assert "401" in result.error_line()


async def test_agent_with_an_unreachable_cluster_exits(
    backend: Backend, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    config = write_agent_config(tmp_path / "agent.yaml", backend.url, kubeconfig)
    result = await run_cli("agent", "--config", str(config))
    assert result.code == 1, result
    assert "cannot reach the Kubernetes API" in result.error_line()


async def test_agent_that_never_reaches_its_server_gives_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = write_agent_config(
        tmp_path / "agent.yaml", f"http://127.0.0.1:{free_port()}", cluster.kubeconfig
    )
    doc = yaml.safe_load(config.read_text())
    doc["firstConnectTimeout"] = 1
    config.write_text(yaml.safe_dump(doc))
    result = await run_cli("agent", "--config", str(config), timeout=20)
    assert result.code == 1, result
    assert "never connected" in result.error_line()


async def test_agent_with_an_unreadable_config(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = await run_cli("agent", "--config", str(missing))
    assert result.code == 2, result
    line = result.error_line()
    assert "cannot read" in line and str(missing) in line


async def test_agent_with_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"server": "ws://127.0.0.1:1/", "account": "a",
                                    "cluster": "c", "resources": []}))
    result = await run_cli("agent", "--config", str(path))
    assert result.code == 2, result
    assert "accessKey" in result.error_line()


async def test_agent_with_a_missing_kubeconfig(tmp_path: Path) -> None:
    config = write_agent_config(tmp_path / "agent.yaml", "http://127.0.0.1:1",
                                tmp_path / "no-kubeconfig")
    result = await run_cli("agent", "--config", str(config))
    assert result.code == 1, result
    assert "Kubernetes credentials" in result.error_line()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("tokens:\n  - {token: short, role: admin}\n", "shorter than 8"),
        ("tokens: [\n", "not valid YAML"),
        ("tokens:\n  - {token: long-enough-token}\n", "needs an account"),
    ],
)
async def test_backend_with_an_invalid_tokens_file(
    tmp_path: Path, content: str, needle: str
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(content)
    result = await run_cli("backend", "--listen", f"127.0.0.1:{free_port()}",
                           "--db", f"sqlite:///{tmp_path}/x.db", "--tokens", str(tokens))
    assert result.code == 2, result
    line = result.error_line()
    assert needle in line and str(tokens) in line


async def test_backend_with_a_missing_tokens_file(tmp_path: Path) -> None:
    result = await run_cli("backend", "--listen", f"127.0.0.1:{free_port()}",
                           "--db", f"sqlite:///{tmp_path}/x.db",
                           "--tokens", str(tmp_path / "absent.yaml"))
    assert result.code == 2, result
    assert "cannot read" in result.error_line()


@pytest.mark.parametrize("db", ["mysql://localhost/x", "x.db", "mongodb://h/db"])
async def test_backend_with_an_unsupported_database_url(tmp_path: Path, db: str) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml")
    result = await run_cli("backend", "--listen", f"127.0.0.1:{free_port()}",
                           "--db", db, "--tokens", str(tokens))
    assert result.code != 0, result
    line = result.error_line()
    assert "unsupported database URL" in line and db in line


async def test_backend_on_a_busy_port(backend: Backend, tmp_path: Path) -> None:
    port = backend.url.rsplit(":", 1)[1]
    result = await run_cli("backend", "--listen", f"127.0.0.1:{port}",
                           "--db", f"sqlite:///{tmp_path}/other.db",
                           "--tokens", str(write_tokens(tmp_path / "t2.yaml")))
    assert result.code == 1, result
    result.error_line()
    assert backend.process.returncode is None  # the first backend is unaffected


async def test_sandbox_on_a_busy_port(cluster: Cluster, tmp_path: Path) -> None:
    result = await run_cli("sandbox", "--port", str(cluster.port),
                           "--kubeconfig", str(tmp_path / "kc2"))
    assert result.code == 1, result
    result.error_line()


async def test_something_other_than_a_backend(tmp_path: Path) -> None:
    """A proxy's HTML page (200 or 502) still gives one error line, never a traceback."""
    page = "<html>\n<body>\n<h1>Sign in</h1>\n</body>\n</html>\n"

    async def ok_html(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", status=502)

    app = web.Application()
    app.router.add_get("/api/v1/objects", ok_html)
    app.router.add_delete("/api/v1/objects", bad_gateway)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = "http://{}:{}".format(*runner.addresses[0][:2])
        listed = await run_cli("objects", "--backend", url, "--token", ADMIN_TOKEN)
        assert listed.code == 1, listed
        assert "other than JSON" in listed.error_line()
        assert listed.stderr.strip() == listed.error_line()
        deleted = await run_cli("delete", "/v1/configmaps", "default/x", "--backend", url,
                                "--token", ADMIN_TOKEN, *target())
        assert deleted.code == 1, deleted
        line = deleted.error_line()
        assert "HTTP 502" in line and "Sign in" in line
        assert deleted.stderr.strip() == line
    finally:
        await runner.cleanup()
