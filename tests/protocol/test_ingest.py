"""kubescape's HTTP ingest mapping: which requests become which messages, which are refused.

Expected values follow the behavioural reference of kubescape's HTTP endpoint adapter (section
5 of shared/reference/kubescape-synchronizer.md), written out by hand here.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.ingest import IngestRefusedError, ingest
from clustersync.protocol.messages import PatchObject, PutObject

ALERTS = Kind("kubescape.io", "v1", "runtimealerts")
STREAMS = Kind("kubescape.io", "v1", "networkstreams")
PROFILES = Kind("kubescape.io", "v1", "nodeprofiles")
RESOURCES = {ALERTS: Strategy.COPY, STREAMS: Strategy.COPY, PROFILES: Strategy.PATCH}
ALERTS_PATH = "/apis/v1/kubescape.io/v1/runtimealerts"


def alert(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubescape.io/v1",
        "kind": "runtimealerts",
        "metadata": {"name": "alert-1", "namespace": "default", **meta},
        "spec": {"rule": "R0001", "message": "unexpected process <sh> & more"},
    }


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def refusal(method: str, path: str, data: bytes, resources: Any = None) -> IngestRefusedError:
    with pytest.raises(IngestRefusedError) as caught:
        ingest(method, path, data, RESOURCES if resources is None else resources)
    return caught.value


def test_post_is_a_put_object_with_the_body_unchanged() -> None:
    # Spacing and key order kept: the body travels byte for byte, unshaped.
    data = b'{ "kind":"runtimealerts", "apiVersion":"kubescape.io/v1",\n "metadata":' \
           b'{"name":"alert-1","namespace":"default"}, "spec":{"n":1.50}}'
    msg = ingest("POST", ALERTS_PATH, data, RESOURCES)
    assert isinstance(msg, PutObject)
    assert msg.ref == ObjectRef(ALERTS, "default", "alert-1")
    assert msg.object == data
    assert msg.checksum == ""
    assert msg.depth == 1 and msg.msg_id  # a local event: depth 1 on the wire, fresh msgId


def test_put_is_a_patch_object_with_the_whole_body_as_the_patch() -> None:
    doc = {"apiVersion": "kubescape.io/v1", "kind": "nodeprofiles",
           "metadata": {"name": "node-1"}, "spec": {"cpu": 3}}
    msg = ingest("PUT", "/apis/v1/kubescape.io/v1/nodeprofiles", body(doc), RESOURCES)
    assert isinstance(msg, PatchObject)
    assert msg.ref == ObjectRef(PROFILES, "", "node-1")
    assert msg.patch == body(doc)


def test_the_checksum_is_the_sync_checksum_annotation() -> None:
    doc = alert(annotations={"kubescape.io/sync-checksum": "abc123", "other": "x"})
    msg = ingest("POST", ALERTS_PATH, body(doc), RESOURCES)
    assert msg.checksum == "abc123"


def test_each_request_gets_its_own_msg_id() -> None:
    first = ingest("POST", ALERTS_PATH, body(alert()), RESOURCES)
    second = ingest("POST", ALERTS_PATH, body(alert()), RESOURCES)
    assert first.msg_id != second.msg_id


def test_path_and_names_are_case_insensitive() -> None:
    doc = alert(name="Alert-1", namespace="Default") | {
        "apiVersion": "KubeScape.io/V1", "kind": "RuntimeAlerts"
    }
    msg = ingest("post", "/APIs/v1/KUBESCAPE.IO/v1/RuntimeAlerts", body(doc), RESOURCES)
    assert msg.ref == ObjectRef(ALERTS, "default", "alert-1")


def test_a_single_part_api_version_is_the_group_with_version_v1() -> None:
    # Go's quirk, kept: "apiVersion": "v1" names group "v1", version "v1".
    odd = Kind("v1", "v1", "things")
    doc = {"apiVersion": "v1", "kind": "things", "metadata": {"name": "t"}}
    msg = ingest("POST", "/apis/v1/v1/v1/things", body(doc), {odd: Strategy.COPY})
    assert msg.ref.kind == odd


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/apis/v1/kubescape.io/v1/runtimealerts/", 400),  # a trailing slash: 7 segments
        ("/apis/v1/kubescape.io/v1", 400),
        ("/apis/v1//v1/configmaps", 400),  # the core group cannot be used
        ("/apis/v1/kubescape.io/v1/runtimealerts/alert-1", 400),
        ("/apis/v2/kubescape.io/v1/runtimealerts", 404),
        ("/api/v1/namespaces/default/configmaps", 404),
        ("/", 404),
    ],
)
def test_bad_paths(path: str, status: int) -> None:
    assert refusal("POST", path, body(alert())).status == status


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH", "HEAD"])
def test_other_methods_are_not_allowed(method: str) -> None:
    assert refusal(method, ALERTS_PATH, body(alert())).status == 405


def test_a_strategy_without_resources_is_not_allowed() -> None:
    # Only copy resources configured: PUT (patch) has nothing to serve.
    refused = refusal("PUT", ALERTS_PATH, body(alert()), {ALERTS: Strategy.COPY})
    assert (refused.status, refused.reason) == (405, "bad_method")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/apis/v1/kubescape.io/v1/registrystatuses"),  # not configured at all
        ("PUT", ALERTS_PATH),  # configured, but for copy (POST)
        ("POST", "/apis/v1/kubescape.io/v1/nodeprofiles"),  # configured for patch (PUT)
    ],
)
def test_kinds_not_configured_for_the_method_are_not_found(method: str, path: str) -> None:
    assert refusal(method, path, body(alert())).status == 404


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (b"[1, 2]", "bad_body"),
        (b'"text"', "bad_body"),
        (body(alert() | {"metadata": None}), "bad_body"),
        (body(alert() | {"metadata": {"namespace": "default"}}), "bad_body"),  # no name
        (body(alert(name=42)), "bad_body"),
        (body(alert() | {"apiVersion": 1}), "bad_body"),
        (body(alert() | {"apiVersion": "a/b/c"}), "bad_body"),
        (body(alert() | {"kind": ""}), "bad_body"),
        (b"[" * 2000 + b"]" * 2000, "bad_json"),  # deeper than the JSON decoder goes
    ],
)
def test_bad_bodies_are_400(data: bytes, reason: str) -> None:
    refused = refusal("POST", ALERTS_PATH, data)
    assert (refused.status, refused.reason) == (400, reason)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "networkstreams"},  # the plural resource must match the path
        {"kind": "RuntimeAlert"},  # a singular Kind is not the resource
        {"apiVersion": "kubescape.io/v2"},
        {"apiVersion": "other.io/v1"},
    ],
)
def test_a_body_naming_another_kind_is_400(change: dict[str, str]) -> None:
    refused = refusal("POST", ALERTS_PATH, body(alert() | change))
    assert (refused.status, refused.reason) == (400, "kind_mismatch")
