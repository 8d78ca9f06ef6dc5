"""Websocket frames as kubescape's synchronizer writes and reads them, every recorded case.

Two checks per frame Go produced: our decoder reads what Go reads from it, and the frame we encode
for the same message reads, Go's way (keys case-insensitive, missing keys zero, unknown keys
ignored), as what Go reads from its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from golden_cases import cases

from clustersync.model import Kind, ObjectRef
from clustersync.protocol import codec
from clustersync.protocol.fields import DecodeError, TooDeepError
from clustersync.protocol.messages import (
    Batch,
    Frame,
    GetObject,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    Ping,
    PutObject,
)

CASES = cases("ws_frames.json")
_EVENT_NAMES = {
    0: "newChecksum",
    2: "objectDeleted",
    4: "getObject",
    5: "patchObject",
    6: "putObject",
    8: "batch",
}
_IGNORED_EVENTS = {1: "objectAdded", 3: "objectModified", 7: "ping"}
_ITEM_LISTS = ("getObject", "newChecksum", "objectDeleted", "patchObject", "putObject")


# ------------------------------------------------------------ a Go-style reading of a frame


def _folded(doc: Any) -> dict[str, Any]:
    return {key.lower(): value for key, value in doc.items()} if isinstance(doc, dict) else {}


def _go_item_view(fields: dict[str, Any], event: str) -> dict[str, Any]:
    view = {
        "name": fields.get("name") or "",
        "namespace": fields.get("namespace") or "",
        "resourceVersion": fields.get("resourceversion") or 0,
    }
    payload = {
        "newChecksum": ("checksum",),
        "objectDeleted": (),
        "getObject": ("baseObject",),
        "patchObject": ("checksum", "patch"),
        "putObject": ("checksum", "object"),
    }[event]
    for key in payload:
        view[key] = fields.get(key.lower()) or ""
    return view


def go_reading(frame: str) -> dict[str, Any]:
    """What a Go synchronizer reads from a frame we wrote (only for frames that dispatch)."""
    fields = _folded(json.loads(frame))
    code = fields.get("event") or 0
    if code in _IGNORED_EVENTS or code > 8:
        return {"outcome": "ignored", "eventCode": code, "eventName": _IGNORED_EVENTS.get(code)}
    kind = _folded(fields.get("kind"))
    gvr = [kind.get(part) or "" for part in ("group", "version", "resource")]
    view: dict[str, Any] = {
        "outcome": "dispatched",
        "event": _EVENT_NAMES[code],
        "depth": fields.get("depth") or 0,
        "msgId": fields.get("msgid") or "",
        "kind": "/".join(gvr),
    }
    if code != 8:
        view.update(_go_item_view(fields, _EVENT_NAMES[code]))
        return view
    items = _folded(fields.get("items"))
    view["batchType"] = fields.get("batchtype") or ""
    view["items"] = {
        name: [_go_item_view(_folded(item), name) for item in items.get(name.lower()) or []]
        for name in _ITEM_LISTS
    }
    return view


# ------------------------------------------------------------ our reading of a frame


def _item_view(msg: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": msg.ref.name,
        "namespace": msg.ref.namespace,
        "resourceVersion": getattr(msg, "resource_version", 0),
    }
    if isinstance(msg, NewChecksum | PatchObject | PutObject):
        view["checksum"] = msg.checksum
    if isinstance(msg, GetObject):
        view["baseObject"] = (msg.base_object or b"").decode()
    if isinstance(msg, PatchObject):
        view["patch"] = msg.patch.decode()
    if isinstance(msg, PutObject):
        view["object"] = msg.object.decode()
    return view


def our_reading(frame: str) -> dict[str, Any]:
    """What our decoder makes of a frame, in the vectors' ``decoded`` schema."""
    try:
        msg: Frame = codec.decode(frame.encode())
    except TooDeepError:
        return {"outcome": "dropped_depth", "depth": json.loads(frame).get("Depth")}
    except DecodeError as exc:
        if exc.reason == "unknown_event":
            code = _folded(json.loads(frame)).get("event")
            return {"outcome": "ignored", "eventCode": code, "eventName": _IGNORED_EVENTS[code]}
        return {"outcome": "refused"}
    if isinstance(msg, Ping):  # decoded, then ignored by every handler, as in Go
        return {"outcome": "ignored", "eventCode": 7, "eventName": "ping"}
    assert not isinstance(msg, Ping)
    kind = msg.kind if isinstance(msg, Batch) else msg.ref.kind  # type: ignore[union-attr]
    view: dict[str, Any] = {
        "outcome": "dispatched",
        "event": _EVENT_NAMES[int(msg.event)],
        "depth": msg.depth,
        "msgId": msg.msg_id,
        "kind": str(kind),
    }
    if not isinstance(msg, Batch):
        view.update(_item_view(msg))
        return view
    view["batchType"] = msg.batch_type
    view["items"] = {
        "getObject": [_item_view(m) for m in msg.get_object],
        "newChecksum": [_item_view(m) for m in msg.new_checksum],
        "objectDeleted": [_item_view(m) for m in msg.object_deleted],
        "patchObject": [_item_view(m) for m in msg.patch_object],
        "putObject": [_item_view(m) for m in msg.put_object],
    }
    return view


def _expected(case: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(case["expected"]["decoded"])
    if decoded["outcome"] in ("unmarshal_error", "panic"):
        return {"outcome": "refused"}  # Go fails on it; we refuse it with a clear error
    return decoded


@pytest.mark.parametrize("case", [c for c in CASES if "frame" in (c.values[0]["expected"])])
def test_we_read_gos_frames_as_go_does(case: dict[str, Any]) -> None:
    assert our_reading(case["expected"]["frame"]) == _expected(case)


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0]["direction"] == "decode"])
def test_we_read_odd_frames_as_go_does(case: dict[str, Any]) -> None:
    assert our_reading(case["input"]["frame"]) == _expected(case)


# ------------------------------------------------------------ our encoding


def _message(given: dict[str, Any]) -> Frame:
    meta = {"depth": given["depth"], "msg_id": given["msgId"]}
    if given["type"] == "Ping":
        return Ping(**meta)
    kind = Kind(given["kind"]["group"], given["kind"]["version"], given["kind"]["resource"])
    if given["type"] == "Batch":
        items = tuple(
            NewChecksum(
                ref=ObjectRef(kind, item["namespace"], item["name"]),
                checksum=item["checksum"],
                resource_version=item["resourceVersion"],
            )
            for item in given["items"]["NewChecksum"]
        )
        return Batch(kind=kind, batch_type=given["batchType"], new_checksum=items, **meta)
    ref = ObjectRef(kind, given["namespace"], given["name"])
    kind_of = given["type"]
    if kind_of == "NewChecksum":
        return NewChecksum(ref=ref, checksum=given["checksum"], **meta)
    if kind_of == "ObjectDeleted":
        return ObjectDeleted(ref=ref, **meta)
    if kind_of == "GetObject":
        base = given["baseObject"]
        return GetObject(ref=ref, base_object=base.encode() if base else None, **meta)
    if kind_of == "PatchObject":
        return PatchObject(
            ref=ref, checksum=given["checksum"], patch=given["patch"].encode(), **meta
        )
    assert kind_of == "PutObject"
    return PutObject(ref=ref, checksum=given["checksum"], object=given["object"].encode(), **meta)


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0]["direction"] == "encode"])
def test_go_reads_our_frames_as_its_own(case: dict[str, Any]) -> None:
    ours = codec.encode(_message(case["input"])).decode()
    assert go_reading(ours) == case["expected"]["decoded"]
