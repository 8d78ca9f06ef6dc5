"""The listener limits as an operator sets them on the command line, on real processes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from .clitools import Process, free_port, http_ok, run_cli, wait_until
from .conftest import ACCOUNT, AGENT_TOKEN, CLUSTER, write_tokens


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("backend", "--header-timeout", "0"),
        ("server", "--max-connections", "0"),
        ("api", "--header-timeout", "soon"),
        ("backend", "--max-message-rate", "-1"),
    ],
)
async def test_bad_limits_are_refused_before_anything_starts(
    tmp_path: Path, command: str, option: str, value: str
) -> None:
    required = {
        "backend": ["--tokens", "t.yaml"],
        "server": ["--tokens", "t.yaml", "--bus", "memory"],
        "api": ["--tokens", "t.yaml", "--bus", "memory", "--db", "sqlite:///x.db"],
    }[command]
    result = await run_cli(command, *required, option, value)
    assert result.code == 2
    assert option in result.stderr and value in result.stderr


async def test_a_backend_with_one_connection_slot_answers_the_next_client_with_503(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    backend = Process("backend", [
        "backend", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path}/b.db",
        "--tokens", str(write_tokens(tmp_path / "tokens.yaml")), "--max-connections", "1",
    ], tmp_path)
    await backend.start()
    try:
        await backend.wait_for_output("serving on")
        await wait_until(lambda: http_ok(f"{url}/healthz"), "the backend's /healthz")
        headers = {"X-API-KEY": AGENT_TOKEN, "X-API-ACCOUNT": ACCOUNT, "X-API-CLUSTER": CLUSTER}
        async with aiohttp.ClientSession() as http, http.ws_connect(
            f"ws://127.0.0.1:{port}/synchronizer", headers=headers
        ) as agent:
            async with aiohttp.ClientSession() as other, other.get(f"{url}/healthz") as answer:
                assert answer.status == 503
                assert answer.headers["Retry-After"] == "5"
            assert not agent.closed
        await wait_until(lambda: http_ok(f"{url}/healthz"), "a free slot again")
    finally:
        await backend.stop()
