"""Reading and writing protocol messages on a websocket, one JSON document per binary frame."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import Counter

from clustersync.adapters.metrics import FRAME_BYTES, MESSAGES, bad_input
from clustersync.protocol.codec import DecodeError, decode_delivery, encode
from clustersync.protocol.messages import MAX_FRAME, Batch, Event, Frame

log = logging.getLogger("clustersync.link")

__all__ = [
    "MAX_FRAME",
    "FrameTooLargeError",
    "Rejected",
    "WebSocket",
    "receive",
    "receive_deliveries",
    "send",
]

WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


# The labelled counters of each (component, direction[, event]), looked up once: ``labels()``
# on every frame was 6% of a server's time with a thousand agents. A handful of combinations.
@functools.cache
def _frame_bytes(component: str, direction: str) -> Counter:
    return FRAME_BYTES.labels(component, direction)


@functools.cache
def _messages(component: str, direction: str, event: Event) -> Counter:
    return MESSAGES.labels(component, direction, event.name.lower())


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that did not decode; the connection stays up."""

    error: DecodeError


class FrameTooLargeError(ValueError):
    """The message encodes to more than :data:`MAX_FRAME` bytes; the peer would close on it."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes encoded, over the frame limit of {MAX_FRAME}")
        self.size = size


async def send(
    ws: WebSocket, msg: Frame, component: str, *, delivery_id: int | None = None
) -> None:
    """Send one message; raises :class:`FrameTooLargeError` (sending nothing) if it cannot fit."""
    frame = encode(msg, delivery_id)
    if len(frame) > MAX_FRAME:
        raise FrameTooLargeError(len(frame))
    await ws.send_bytes(frame)
    _frame_bytes(component, "out").inc(len(frame))
    # A batch counts as the object messages it carries, as if each were sent alone (one
    # increment per kind of item, not per item: a first sync sends hundreds per frame); a
    # batch without items (an inventory request, an empty answer) as a batch.
    counts = _item_counts(msg) if isinstance(msg, Batch) else ()
    for event, count in counts or ((msg.event, 1),):
        _messages(component, "out", event).inc(count)


def _item_counts(batch: Batch) -> list[tuple[Event, int]]:
    return [
        (event, len(items))
        for event, items in (
            (Event.GET_OBJECT, batch.get_object),
            (Event.NEW_CHECKSUM, batch.new_checksum),
            (Event.OBJECT_DELETED, batch.object_deleted),
            (Event.PATCH_OBJECT, batch.patch_object),
            (Event.PUT_OBJECT, batch.put_object),
        )
        if items
    ]


async def receive(
    ws: WebSocket, component: str, *, check_payloads: bool = True
) -> AsyncIterator[tuple[Frame | Rejected, bytes]]:
    """Decoded messages until the peer closes, each with the frame it came in (for a relay that
    forwards it as received); bad frames are reported, not fatal. ``check_payloads=False``:
    objects and patches are not parsed (see ``codec.from_wire``)."""
    async for item, _, data in _frames(ws, component, check_payloads):
        yield item, data


async def receive_deliveries(
    ws: WebSocket, component: str
) -> AsyncIterator[tuple[Frame | Rejected, int | None]]:
    """Decoded messages with each frame's delivery id (None if it carries none)."""
    async for item, delivery_id, _ in _frames(ws, component, True):
        yield item, delivery_id


async def _frames(
    ws: WebSocket, component: str, check_payloads: bool
) -> AsyncIterator[tuple[Frame | Rejected, int | None, bytes]]:
    async for frame in ws:
        if frame.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
            _frame_bytes(component, "in").inc(len(data))
            msg, delivery_id = decode_delivery(data, check_payloads=check_payloads)
            if isinstance(msg, DecodeError):
                bad_input(component, msg.reason)
                log.warning("%s: rejected frame: %s", component, msg)
                yield Rejected(msg), delivery_id, data
                continue
            _messages(component, "in", msg.event).inc()
            yield msg, delivery_id, data
        elif frame.type == aiohttp.WSMsgType.ERROR:
            log.warning("%s: websocket error: %s", component, ws.exception())
            return
