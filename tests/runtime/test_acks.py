"""Acknowledgement by delivery id, end to end.

Server side: a delivery whose ack does not come in time is delivered again, and after the
attempt limit parked as a dead letter, so one poison message never stalls a cluster's down
stream; an envelope for another cluster is never delivered. Agent side, against a scripted
backend: every frame that carries a readable delivery id is acknowledged, including frames the
agent rejects, whatever else the backend sends (fuzzed), and the agent keeps applying writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from clustersync.model import ObjectRef
from clustersync.protocol.codec import decode, decode_delivery, encode, to_wire
from clustersync.protocol.delivery import DeliveryPolicy
from clustersync.protocol.envelope import Envelope, down_subject, encode_envelope
from clustersync.protocol.messages import ACK_PROTOCOL, Ack, PutObject
from clustersync.runtime.agent import Agent

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
    )
    from tests.runtime.test_bad_input import kubescape_headers
except ImportError:
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
    )
    from test_bad_input import kubescape_headers  # type: ignore[no-redef]


# ---------------------------------------------------------------- the server's side


@dataclass
class SilentAgent:
    """A client that negotiates acks, records what it is sent, and acks only when told to."""

    ws: aiohttp.ClientWebSocketResponse
    received: list[tuple[str, int | None]] = field(default_factory=list)  # (name, delivery id)
    ack_names: set[str] = field(default_factory=set)

    async def run(self) -> None:
        async for frame in self.ws:
            msg, delivery_id = decode_delivery(frame.data)
            if isinstance(msg, PutObject):
                self.received.append((msg.ref.name, delivery_id))
                if msg.ref.name in self.ack_names and delivery_id is not None:
                    await self.ws.send_bytes(encode(Ack(ids=(delivery_id,))))
            elif delivery_id is not None:  # inventory answers and the like: ack at once
                await self.ws.send_bytes(encode(Ack(ids=(delivery_id,))))


@contextlib.asynccontextmanager
async def silent_agent(world: World, cluster: str) -> AsyncIterator[SilentAgent]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            world.backend.ws_url, headers=kubescape_headers(cluster), protocols=(ACK_PROTOCOL,)
        ) as ws,
    ):
        assert ws.protocol == ACK_PROTOCOL
        agent = SilentAgent(ws)
        task = asyncio.create_task(agent.run())
        try:
            yield agent
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_an_unacknowledged_delivery_is_redelivered_then_parked(world: World) -> None:
    world.backend.server.delivery = DeliveryPolicy(ack_timeout=0.3, max_attempts=3)
    await world.add_cluster(CLUSTER_A)
    async with silent_agent(world, CLUSTER_A) as agent:
        agent.ack_names = {"after-poison"}
        await eventually(lambda: world.connected(CLUSTER_A), what="the client to connect")
        await world.api_put(CLUSTER_A, configmap("poison"))
        await world.api_put(CLUSTER_A, configmap("after-poison"))

        await eventually(
            lambda: [n for n, _ in agent.received].count("after-poison") == 1,
            timeout=20,
            what="the message after the poison delivered",
        )
        poison_ids = [i for n, i in agent.received if n == "poison"]
        # Three attempts, each with a new id, then parked rather than a fourth delivery.
        assert len(poison_ids) == 3
        assert len(set(poison_ids)) == 3 and None not in poison_ids
        letters = await eventually(world.store.dead_letters, what="the dead letter")
        assert len(letters) == 1
        assert letters[0].subject == down_subject(ACCOUNT, CLUSTER_A)
        assert "not acknowledged in 3 deliveries" in letters[0].reason
        assert b"poison" in letters[0].data
        assert [n for n, _ in agent.received].count("poison") == 3


async def test_a_late_ack_settles_nothing_and_a_prompt_one_needs_no_redelivery(
    world: World,
) -> None:
    world.backend.server.delivery = DeliveryPolicy(ack_timeout=5.0, max_attempts=3)
    await world.add_cluster(CLUSTER_A)
    async with silent_agent(world, CLUSTER_A) as agent:
        agent.ack_names = {"prompt"}
        await eventually(lambda: world.connected(CLUSTER_A), what="the client to connect")
        await world.api_put(CLUSTER_A, configmap("prompt"))
        await world.api_put(CLUSTER_A, configmap("second"))
        await eventually(
            lambda: any(n == "second" for n, _ in agent.received), what="the second delivery"
        )
        # The ack of "prompt" released the stream at once: one delivery each, no redelivery.
        assert [n for n, _ in agent.received] == ["prompt", "second"]
        conn = world.backend.server.connections[(ACCOUNT, CLUSTER_A)]
        assert len(conn.unacked) == 1  # "second" is waiting for its ack


async def test_an_envelope_for_another_cluster_is_parked_not_delivered(world: World) -> None:
    await world.add_cluster(CLUSTER_A)
    async with silent_agent(world, CLUSTER_A) as agent:
        agent.ack_names = {"mine"}
        await eventually(lambda: world.connected(CLUSTER_A), what="the client to connect")
        stray = PutObject(
            ref=ObjectRef(CONFIGMAPS, "shop", "for-b"), checksum="", object=b"{}"
        )
        await world.bus.publish(
            down_subject(ACCOUNT, CLUSTER_A),
            encode_envelope(Envelope(ACCOUNT, CLUSTER_B, stray)),
        )
        await world.api_put(CLUSTER_A, configmap("mine"))
        await eventually(
            lambda: any(n == "mine" for n, _ in agent.received), what="A's own write"
        )
        assert [n for n, _ in agent.received] == ["mine"]
        letters = await eventually(world.store.dead_letters, what="the dead letter")
        assert [letter.reason for letter in letters] == [f"addressed to {ACCOUNT}/{CLUSTER_B}"]


# ---------------------------------------------------------------- the agent's side


@dataclass
class ScriptedBackend:
    """A websocket server speaking clustersync.v1 that sends whatever frames a test gives it."""

    url: str = ""
    frames: asyncio.Queue[tuple[bytes | str, bool] | None] = field(default_factory=asyncio.Queue)
    acked: list[int] = field(default_factory=list)
    connections: int = 0


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedBackend]:
    backend = ScriptedBackend()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(ACK_PROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        backend.connections += 1

        async def read() -> None:
            async for frame in ws:
                msg = decode(frame.data)
                if isinstance(msg, Ack):
                    backend.acked.extend(msg.ids)

        reader = asyncio.create_task(read())
        try:
            while not ws.closed:
                item = await backend.frames.get()
                if item is None:  # the test is over
                    break
                data, binary = item
                if binary:
                    await ws.send_bytes(data if isinstance(data, bytes) else data.encode())
                else:
                    await ws.send_str(data if isinstance(data, str) else data.decode())
        finally:
            reader.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    backend.url = f"ws://{host}:{port}/"
    try:
        yield backend
    finally:
        backend.frames.put_nowait(None)
        await runner.cleanup()


def _put_frame(name: str, delivery_id: int) -> bytes:
    obj = configmap(name, round="fuzz")
    put = PutObject(
        ref=ObjectRef(CONFIGMAPS, "shop", name), checksum="", object=orjson.dumps(obj)
    )
    return encode(put, delivery_id)


def _fuzz_frame(rng: random.Random, delivery_id: int) -> tuple[bytes | str, bool, bool]:
    """A frame the agent must survive: (data, binary?, does it carry a readable id?)."""
    choice = rng.randrange(10)
    if choice == 0:  # not JSON at all
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))), True, False
    if choice == 1:  # an event from a newer backend
        doc: dict[str, Any] = {"Event": rng.randrange(9, 99), "DeliveryId": delivery_id}
        return orjson.dumps(doc), True, True
    if choice == 2:  # a known event with broken fields
        doc = {"Event": 6, "Kind": rng.choice([None, 3, "pods", {}]), "DeliveryId": delivery_id}
        return orjson.dumps(doc), True, True
    if choice == 3:  # a ping, as a text frame, the id in another key case
        return orjson.dumps({"event": 7, "deliveryid": delivery_id}).decode(), False, True
    if choice == 4:  # a write the policy refuses (a kind this agent does not sync)
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
        frame = {
            "Event": 6, "Kind": {"Group": "", "Version": "v1", "Resource": "secrets"},
            "Name": "s", "Namespace": "shop", "Object": orjson.dumps(secret).decode(),
            "DeliveryId": delivery_id,
        }
        return orjson.dumps(frame), True, True
    if choice == 5:  # too deep for any JSON parser the agent uses: no id can be read
        return b'{"DeliveryId": 1, "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", True, False
    if choice == 6:  # the id itself is unusable
        bad_id = rng.choice(["7", -3, 0, True, None, 1.5])
        return orjson.dumps({"Event": 7, "DeliveryId": bad_id}), True, False
    if choice == 7:  # a depth beyond the protocol's limit
        return orjson.dumps({"Event": 7, "Depth": 99, "DeliveryId": delivery_id}), True, True
    if choice == 8:  # the Object is not JSON text
        frame = {
            "Event": 6, "Kind": {"Group": "", "Version": "v1", "Resource": "configmaps"},
            "Name": "x", "Namespace": "shop", "Object": "{not json", "DeliveryId": delivery_id,
        }
        return orjson.dumps(frame), True, True
    # a batch whose items are the wrong shape
    doc = {"Event": 8, "Kind": to_wire(PutObject(
        ref=ObjectRef(CONFIGMAPS, "shop", "x"), checksum="", object=b"{}"))["Kind"],
        "Items": {"PutObject": "nope"}, "DeliveryId": delivery_id}
    return orjson.dumps(doc), True, True


@pytest.mark.parametrize("seed", range(3))
async def test_fuzzed_backend_frames_are_all_acknowledged_and_writes_keep_applying(
    world: World, scripted: ScriptedBackend, seed: int
) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    agent = Agent(world.agent_config(CLUSTER_A, server=scripted.url), cluster.kube)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(agent.connected.is_set, what="the agent to connect")
        rng = random.Random(seed)
        want_acked: set[int] = set()
        good: list[str] = []
        for delivery_id in range(1, 121):
            if delivery_id % 10 == 0:
                name = f"good-{delivery_id}"
                good.append(name)
                await scripted.frames.put((_put_frame(name, delivery_id), True))
                want_acked.add(delivery_id)
                continue
            data, binary, readable = _fuzz_frame(rng, delivery_id)
            await scripted.frames.put((data, binary))
            if readable:
                want_acked.add(delivery_id)

        def all_applied() -> bool:
            return all(cluster.get(CONFIGMAPS, "shop", name) is not None for name in good)

        await eventually(all_applied, timeout=30, what="every good write applied")
        await eventually(
            lambda: set(scripted.acked) >= want_acked, timeout=15,
            what=f"acks for every readable id (missing {want_acked - set(scripted.acked)})",
        )
        assert set(scripted.acked) == want_acked  # nothing acked that was not sent with an id
        assert len(scripted.acked) == len(want_acked)  # and each exactly once
        assert scripted.connections == 1  # no frame broke the link
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
