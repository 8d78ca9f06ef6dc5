"""The agent's HTTP ingest endpoint over real sockets: answers, limits, bad input, config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.messages import Message, PatchObject, PutObject
from clustersync.runtime.agent import Agent
from clustersync.runtime.config import (
    ConfigError,
    IngestConfig,
    ResourceSpec,
    parse_agent_config,
)
from clustersync.runtime.ingest import IngestEndpoint

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import CLUSTER_A, World
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from harness import CLUSTER_A, World  # type: ignore[no-redef]

ALERTS = Kind("kubescape.io", "v1", "runtimealerts")
PROFILES = Kind("kubescape.io", "v1", "nodeprofiles")
RESOURCES = (ResourceSpec(ALERTS, Strategy.COPY), ResourceSpec(PROFILES, Strategy.PATCH))
ALERTS_PATH = "/apis/v1/kubescape.io/v1/runtimealerts"
LIMIT = 4096


def alert(name: str = "alert-1", size: int = 10) -> bytes:
    return orjson.dumps({
        "apiVersion": "kubescape.io/v1",
        "kind": "runtimealerts",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"text": "x" * size},
    })


def bad_inputs(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "clustersync_bad_input_total", {"component": "ingest", "reason": reason}
    )
    return value or 0.0


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.fail: Exception | None = None

    async def __call__(self, messages: list[Message]) -> None:
        if self.fail is not None:
            raise self.fail
        self.messages.extend(messages)


Start = Callable[..., Awaitable[tuple[IngestEndpoint, Recorder]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[IngestEndpoint] = []

    async def start(**overrides: Any) -> tuple[IngestEndpoint, Recorder]:
        values: dict[str, Any] = {
            "port": 0, "resources": RESOURCES, "host": "127.0.0.1", "max_body_bytes": LIMIT,
        }
        warn_every = overrides.pop("warn_every", 60.0)
        values.update(overrides)
        recorder = Recorder()
        endpoint = IngestEndpoint(IngestConfig(**values), recorder, warn_every=warn_every)
        await endpoint.start()
        started.append(endpoint)
        return endpoint, recorder

    yield start
    for endpoint in started:
        await endpoint.stop()


async def call(
    method: str, url: str, data: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=data, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_health_and_readiness(start: Start) -> None:
    endpoint, _ = await start()
    assert (await call("GET", f"{endpoint.url}/healthz"))[0] == 200
    assert (await call("GET", f"{endpoint.url}/readyz"))[0] == 200


async def test_post_is_queued_as_a_put_object_and_answered_202(start: Start) -> None:
    endpoint, recorder = await start()
    status, _ = await call("POST", f"{endpoint.url}{ALERTS_PATH}", alert())
    assert status == 202
    (msg,) = recorder.messages
    assert isinstance(msg, PutObject)
    assert (msg.ref, msg.object) == (ObjectRef(ALERTS, "default", "alert-1"), alert())


async def test_put_is_queued_as_a_patch_object(start: Start) -> None:
    endpoint, recorder = await start()
    doc = {"apiVersion": "kubescape.io/v1", "kind": "nodeprofiles", "metadata": {"name": "n1"}}
    status, _ = await call(
        "PUT", f"{endpoint.url}/apis/v1/kubescape.io/v1/nodeprofiles", orjson.dumps(doc)
    )
    assert status == 202
    (msg,) = recorder.messages
    assert isinstance(msg, PatchObject) and msg.patch == orjson.dumps(doc)


BAD_REQUESTS = [
    ("POST", ALERTS_PATH, b"{oops", 400, "bad_json"),
    ("POST", ALERTS_PATH + "/", alert(), 400, "bad_path"),
    ("POST", "/apis/v1/kubescape.io/v1/networkstreams", alert(), 404, "unknown_kind"),
    ("GET", ALERTS_PATH, None, 405, "bad_method"),
    ("POST", "/metrics", alert(), 404, "unknown_path"),
]


@pytest.mark.parametrize("request_", BAD_REQUESTS, ids=[r[4] for r in BAD_REQUESTS])
async def test_bad_input_is_4xx_with_a_metric(
    start: Start, request_: tuple[str, str, bytes | None, int, str]
) -> None:
    method, path, data, status, reason = request_
    endpoint, recorder = await start()
    before = bad_inputs(reason)
    got, text = await call(method, f"{endpoint.url}{path}", data)
    assert got == status and text.strip()
    assert bad_inputs(reason) == before + 1
    assert recorder.messages == []


async def test_an_oversized_body_is_refused_before_it_is_read(start: Start) -> None:
    endpoint, recorder = await start()
    before = bad_inputs("too_large")
    status, _ = await call("POST", f"{endpoint.url}{ALERTS_PATH}", alert(size=2 * LIMIT))
    assert status == 413
    assert status == 413 and bad_inputs("too_large") == before + 1

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(4):
            yield b"x" * LIMIT

    status, _ = await call("POST", f"{endpoint.url}{ALERTS_PATH}", chunks())
    assert status == 413
    assert recorder.messages == []
    # The endpoint still serves.
    assert (await call("POST", f"{endpoint.url}{ALERTS_PATH}", alert()))[0] == 202


async def test_a_body_that_does_not_arrive_in_time_is_408(start: Start) -> None:
    endpoint, recorder = await start(read_timeout=0.3)
    host, port = endpoint.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {ALERTS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"apiVersion":'
        )
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        assert status_line.split()[1] == b"408"
    finally:
        writer.close()
    assert recorder.messages == []


async def test_a_request_head_that_does_not_arrive_in_time_is_cut_off(start: Start) -> None:
    endpoint, _ = await start(read_timeout=0.3)
    host, port = endpoint.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"POST {ALERTS_PATH} HTTP/1.1\r\nHost: x\r\n".encode())  # never ends
        await writer.drain()
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the endpoint
    finally:
        writer.close()
    assert (await call("GET", f"{endpoint.url}/healthz"))[0] == 200  # still serving


async def test_a_failing_send_path_is_503(start: Start) -> None:
    endpoint, recorder = await start()
    recorder.fail = RuntimeError("outbox full")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{endpoint.url}{ALERTS_PATH}", data=alert()) as response,
    ):
        assert response.status == 503
        assert "outbox full" in await response.text()
        assert response.headers["Retry-After"] == "5"


async def test_the_agent_queues_no_more_than_its_limit(world: World) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    agent = Agent(world.agent_config(CLUSTER_A), cluster.kube)  # not running: the link is down
    agent.submit_limit = 2
    config = IngestConfig(port=0, host="127.0.0.1", resources=RESOURCES)
    endpoint = IngestEndpoint(config, agent.submit)
    await endpoint.start()
    try:
        statuses = [
            (await call("POST", f"{endpoint.url}{ALERTS_PATH}", alert(f"a-{i}")))[0]
            for i in range(3)
        ]
    finally:
        await endpoint.stop()
    assert statuses == [202, 202, 503]
    assert [msg.ref.name for msg in agent.outbox] == ["a-0", "a-1"]


async def test_repeated_bad_input_is_logged_once_per_reason_and_interval(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, _ = await start(warn_every=60.0)
    with caplog.at_level(logging.WARNING, logger="clustersync.ingest"):
        for _ in range(5):
            await call("POST", f"{endpoint.url}{ALERTS_PATH}", b"{oops")
        await call("POST", f"{endpoint.url}{ALERTS_PATH}/", alert())
    lines = [r.getMessage() for r in caplog.records if r.name == "clustersync.ingest"]
    assert len(lines) == 2, lines
    assert "bad_json" in lines[0] and "bad_path" in lines[1]


async def test_suppressed_warnings_are_counted_in_the_next_line(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, _ = await start(warn_every=0.2)
    with caplog.at_level(logging.WARNING, logger="clustersync.ingest"):
        for _ in range(3):
            await call("POST", f"{endpoint.url}{ALERTS_PATH}", b"{oops")

        async def logged_again() -> bool:
            await call("POST", f"{endpoint.url}{ALERTS_PATH}", b"{oops")
            return any("more like it" in r.getMessage() for r in caplog.records)

        async with asyncio.timeout(10):
            while not await logged_again():
                await asyncio.sleep(0.05)


# ---------------------------------------------------------------- configuration


def agent_doc(**extra: Any) -> dict[str, Any]:
    return {
        "inCluster": {
            "serverUrl": "ws://127.0.0.1:1/",
            "account": "acct",
            "clusterName": "clus",
            "accessKey": "agent-key-123",
            "resources": [{"version": "v1", "resource": "configmaps"}],
        },
        **extra,
    }


KUBESCAPE_ENDPOINT = {
    "serverPort": "8089",
    "resources": [
        {"group": "kubescape.io", "version": "v1", "resource": "runtimealerts",
         "strategy": "copy"},
        {"group": "kubescape.io", "version": "v1", "resource": "nodeprofiles",
         "strategy": "patch"},
    ],
}


def test_kubescapes_http_endpoint_section_configures_it() -> None:
    config = parse_agent_config(agent_doc(httpEndpoint=KUBESCAPE_ENDPOINT)).ingest
    assert config is not None
    assert config.port == 8089 and config.host == "0.0.0.0"
    assert config.resources == RESOURCES
    assert (config.max_body_bytes, config.read_timeout) == (32 * 1024 * 1024, 5.0)


def test_no_section_no_endpoint() -> None:
    assert parse_agent_config(agent_doc()).ingest is None


@pytest.mark.parametrize(
    "section",
    [
        {"serverPort": "http", "resources": KUBESCAPE_ENDPOINT["resources"]},
        {"serverPort": 70000, "resources": KUBESCAPE_ENDPOINT["resources"]},
        {"serverPort": True, "resources": KUBESCAPE_ENDPOINT["resources"]},
        {"serverPort": "8089", "resources": []},
        {"serverPort": "8089", "resources": [{"version": "v1", "resource": "x",
                                               "strategy": "mirror"}]},
        KUBESCAPE_ENDPOINT | {"maxBodyBytes": 64 * 1024 * 1024},
        KUBESCAPE_ENDPOINT | {"readTimeout": 0},
        "8089",
    ],
)
def test_bad_sections_are_refused(section: Any) -> None:
    with pytest.raises(ConfigError, match="httpEndpoint"):
        parse_agent_config(agent_doc(httpEndpoint=section))
