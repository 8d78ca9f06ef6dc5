"""``clustersync push|delete`` with ``--wait``: real backend, sandbox and agent processes.

Exit status: 0 done, 1 refused, failed or not found (with the reason), 2 bad input.
"""

from __future__ import annotations

import yaml

from .clitools import Process, run_cli
from .conftest import Backend, Cluster
from .test_cli import admin, cluster_configmap, configmap, target, wait_synced


def documents(*objects: object) -> bytes:
    return yaml.safe_dump_all(objects).encode()


async def test_push_from_stdin_waits_for_every_document(
    backend: Backend, cluster: Cluster, agent: Process
) -> None:
    await wait_synced(backend)
    stdin = documents(configmap("stdin-1", i="1"), configmap("stdin-2", i="2"))
    pushed = await run_cli("push", "-", "--wait", *admin(backend), *target(), stdin=stdin)
    assert pushed.code == 0, pushed.stderr
    lines = sorted(pushed.stdout.splitlines())
    assert [line.split(" (write ")[0] for line in lines] == [
        "applied ConfigMap default/stdin-1",
        "applied ConfigMap default/stdin-2",
    ]
    for name, value in (("stdin-1", "1"), ("stdin-2", "2")):
        live = await cluster_configmap(cluster, name)
        assert live is not None and live["data"] == {"i": value}  # applied means it is there


async def test_a_refused_push_exits_1_with_the_api_servers_reason(
    backend: Backend, cluster: Cluster, agent: Process
) -> None:
    await wait_synced(backend)
    stdin = documents(configmap("lost", "nowhere"))
    pushed = await run_cli("push", "-", "--wait", *admin(backend), *target(), stdin=stdin)
    assert pushed.code == 1, pushed
    line = pushed.error_line()
    assert "ConfigMap nowhere/lost: refused:" in line
    assert 'namespaces "nowhere" not found' in line


async def test_one_refused_document_of_two(
    backend: Backend, cluster: Cluster, agent: Process
) -> None:
    await wait_synced(backend)
    stdin = documents(configmap("kept"), configmap("lost", "nowhere"))
    pushed = await run_cli("push", "-", "--wait", *admin(backend), *target(), stdin=stdin)
    assert pushed.code == 1, pushed
    assert pushed.stdout.startswith("applied ConfigMap default/kept")
    assert "1 of 2 writes were not done" in pushed.error_line()
    assert "ConfigMap nowhere/lost: refused" in pushed.stderr


async def test_delete_of_an_absent_object_exits_1_not_found(
    backend: Backend, cluster: Cluster, agent: Process
) -> None:
    await wait_synced(backend)
    deleted = await run_cli(
        "delete", "/v1/configmaps", "default/never-was", "--wait", *admin(backend), *target()
    )
    assert deleted.code == 1, deleted
    line = deleted.error_line()
    assert "delete of /v1/configmaps default/never-was: not found" in line
    assert "does not exist in the cluster" in line


async def test_delete_waits_until_applied(
    backend: Backend, cluster: Cluster, agent: Process
) -> None:
    await wait_synced(backend)
    pushed = await run_cli(
        "push", "-", "--wait", *admin(backend), *target(), stdin=documents(configmap("brief"))
    )
    assert pushed.code == 0, pushed.stderr
    deleted = await run_cli(
        "delete", "/v1/configmaps", "default/brief", "--wait", *admin(backend), *target()
    )
    assert deleted.code == 0, deleted.stderr
    assert deleted.stdout.startswith("applied delete of /v1/configmaps default/brief")
    assert await cluster_configmap(cluster, "brief") is None


async def test_a_misspelled_cluster_exits_1(backend: Backend) -> None:
    pushed = await run_cli(
        "push", "-", *admin(backend), "--account", "acct-cli", "--cluster", "cluster-clj",
        stdin=documents(configmap("typo")),
    )
    assert pushed.code == 1, pushed
    line = pushed.error_line()
    assert "HTTP 404" in line and "unknown cluster 'cluster-clj'" in line


async def test_bad_input_exits_2(backend: Backend) -> None:
    empty = await run_cli("push", "-", *admin(backend), *target(), stdin=b"")
    assert empty.code == 2, empty
    assert "standard input holds no Kubernetes objects" in empty.error_line()
    nameless = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "default"}}
    refused = await run_cli("push", "-", *admin(backend), *target(), stdin=documents(nameless))
    assert refused.code == 2, refused
    assert "HTTP 400" in refused.error_line() and "metadata.name" in refused.error_line()


async def test_wait_gives_up_on_a_cluster_that_never_answers(backend: Backend) -> None:
    # No agent is running: the write stays pending, and --wait says so instead of hanging.
    pushed = await run_cli(
        "push", "-", "--wait", "--timeout", "1", *admin(backend), *target(),
        stdin=documents(configmap("waiting")),
    )
    assert pushed.code == 1, pushed
    line = pushed.error_line()
    assert "ConfigMap default/waiting: still pending after 1s" in line
