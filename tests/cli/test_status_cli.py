"""``clustersync status``: the fleet table and one cluster's kinds, from real processes."""

from __future__ import annotations

import json

from .clitools import Process, run_cli, wait_until
from .conftest import ACCOUNT, ADMIN_TOKEN, CLUSTER, Backend


def admin(backend: Backend) -> list[str]:
    return ["--backend", backend.url, "--token", ADMIN_TOKEN]


async def test_status_table_and_json_for_a_synced_cluster(
    backend: Backend, agent: Process
) -> None:
    async def synced() -> bool:
        result = await run_cli("status", *admin(backend), "--cluster", CLUSTER, "-o", "json")
        return result.code == 0 and json.loads(result.stdout)["initialSync"] == "done"

    await wait_until(synced, "the agent's initial sync to be reported done")
    result = await run_cli("status", *admin(backend), "--cluster", CLUSTER, "-o", "json")
    doc = json.loads(result.stdout)
    assert (doc["account"], doc["cluster"], doc["connected"]) == (ACCOUNT, CLUSTER, True)
    assert doc["protocol"] == "clustersync.v2"  # our agent and server agree on fast digests

    table = await run_cli("status", *admin(backend))
    assert table.code == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["CLUSTER", "CONNECTED", "REPLICA", "SINCE"]
    cells = row.split()
    assert cells[:2] == [f"{ACCOUNT}/{CLUSTER}", "yes"]
    assert str(doc["objects"]) in cells and "done" in cells

    one = await run_cli("status", *admin(backend), "--cluster", f"{ACCOUNT}/{CLUSTER}")
    assert one.code == 0, one.stderr
    lines = one.stdout.splitlines()
    kinds_at = lines.index(f"{ACCOUNT}/{CLUSTER}")
    assert lines[kinds_at + 1].split() == [
        "KIND", "OBJECTS", "LISTED", "SENT", "ACKNOWLEDGED", "SYNC"
    ]
    namespaces = next(line for line in lines if line.startswith("/v1/namespaces "))
    assert namespaces.split()[-1] == "done"


async def test_status_of_an_unknown_cluster_fails_in_one_line(backend: Backend) -> None:
    result = await run_cli("status", *admin(backend), "--cluster", "nowhere")
    assert result.code == 1
    assert "no cluster named 'nowhere'" in result.error_line()
    result = await run_cli("status", *admin(backend), "--cluster", f"{ACCOUNT}/nowhere")
    assert result.code == 1
    assert "404" in result.error_line() and "nowhere" in result.error_line()
