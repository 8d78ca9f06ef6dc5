"""clustersync's fast digest (protocol/digest.py) and the sessions that use it once negotiated:
the digest against its definition (computed independently in tests/faults/digests.py), the
verifying side choosing the kind of the checksum it received, and the agent switching kinds
between servers without handing out a cached checksum of the other kind."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from tests.faults.digests import (
    FAST_FORM,
    KUBESCAPE_FORM,
    expected_fast_digest,
    expected_fast_digest_of_json,
)

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy, WatchEvent
from clustersync.protocol.backend import StoredCopy, decide
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION
from clustersync.protocol.digest import (
    digest_like,
    fast_digest,
    is_fast,
    sorted_json_and_digest,
)
from clustersync.protocol.mergepatch import apply_patch
from clustersync.protocol.messages import GetObject, NewChecksum, PatchObject, PutObject
from clustersync.protocol.shaping import NamespaceRules, shape

PODS = Kind.parse("/v1/pods")
CONFIGMAPS = Kind.parse("/v1/configmaps")
REF = ObjectRef(PODS, "default", "web")

# kubescape's reference vector (reference section 3.7), recorded from the Go code.
VECTOR_1 = {"kind": "kind", "metadata": {"name": "name", "resourceVersion": "1"}}
VECTOR_1_SUM = "b8e83bb8d6a990924cd950530b53a09485b18ff40b68e8245f648e77cbc3e9f1"


def live_pod(version: int = 1, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web", "namespace": "default", "uid": "u1",
            "resourceVersion": str(version), "labels": {"app": "web", **labels},
        },
        "spec": {"replicas": 1, "containers": [{"name": "app", "image": "nginx:1"}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True", "n": version}]},
    }


def session(fast: bool = True) -> AgentSession:
    s = AgentSession({PODS: Strategy.PATCH, CONFIGMAPS: Strategy.COPY}, NamespaceRules())
    s.use_fast_digests(fast)
    return s


# ---------------------------------------------------------------- the digest itself


def test_fast_digest_follows_its_definition() -> None:
    obj = shape(PODS, live_pod())
    assert fast_digest(obj) == expected_fast_digest(obj)
    assert FAST_FORM.match(fast_digest(obj))
    assert is_fast(fast_digest(obj))


def test_key_order_and_conditions_do_not_count_other_status_does() -> None:
    obj = shape(PODS, live_pod())
    reordered = dict(reversed(list(obj.items())))
    heartbeat = copy.deepcopy(obj)
    heartbeat["status"]["conditions"][0]["n"] = 99
    moved = copy.deepcopy(obj)
    moved["status"]["phase"] = "Failed"
    assert fast_digest(reordered) == fast_digest(heartbeat) == fast_digest(obj)
    assert fast_digest(moved) != fast_digest(obj)
    assert obj["status"]["conditions"]  # the input is left as it was


CONDITIONS = [{"type": "Ready", "status": "True"}]
SORTED_DIGEST_CASES: dict[str, dict[str, Any]] = {
    "no status": {"kind": "Pod", "spec": {"conditions": CONDITIONS}},
    "status without conditions": {"kind": "Pod", "status": {"phase": "Running"}},
    "conditions only": {"kind": "Pod", "status": {"conditions": CONDITIONS}},
    "conditions first": {"kind": "Pod", "status": {"phase": "Running", "conditions": []}},
    "conditions between": {"status": {"b": 1, "conditions": CONDITIONS, "a": 0}, "kind": "K"},
    "conditions last": {"status": {"zone": "a", "conditions": None, "capacity": {"x": 1}}},
    "nested status and conditions": {
        "status": {"conditions": CONDITIONS, "x": {"status": {"conditions": CONDITIONS}}},
        "spec": {"status": {"conditions": CONDITIONS}},
    },
    "a key after status": {"status": {"conditions": CONDITIONS, "n": 1}, "subjects": [1]},
    "a non-ascii key after status": {"status": {"conditions": CONDITIONS}, "\u00e9t\u00e9": 1},
    "status not an object": {"status": "conditions", "kind": "K"},
}


@pytest.mark.parametrize("value", SORTED_DIGEST_CASES.values(), ids=SORTED_DIGEST_CASES.keys())
def test_one_sorted_encoding_gives_the_document_and_its_digest(value: dict[str, Any]) -> None:
    document, raw = sorted_json_and_digest(value)
    sorted_text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert document == sorted_text.encode()
    assert "cs1:" + raw.hex() == expected_fast_digest(value)


def test_never_mistaken_for_kubescapes_hash() -> None:
    assert not KUBESCAPE_FORM.match(fast_digest(VECTOR_1))
    assert not is_fast(VECTOR_1_SUM)


def test_values_orjson_cannot_encode_fall_back_to_kubescapes_hash() -> None:
    huge = {"metadata": {"name": "x"}, "spec": {"n": 2**70}}  # beyond 64 bits
    digest = fast_digest(huge)
    assert KUBESCAPE_FORM.match(digest)
    assert digest_like(digest, huge) == digest  # so the verifier falls back too
    assert fast_digest(VECTOR_1) != VECTOR_1_SUM


def test_digest_like_computes_the_kind_it_was_given() -> None:
    assert digest_like(VECTOR_1_SUM, VECTOR_1) == VECTOR_1_SUM  # Go's recorded value
    assert digest_like("cs1:whatever", VECTOR_1) == expected_fast_digest(VECTOR_1)
    assert digest_like("", VECTOR_1) == VECTOR_1_SUM  # no checksum: kubescape's


# ---------------------------------------------------------------- agent and backend


def test_the_agent_sends_fast_digests_once_negotiated() -> None:
    s = session()
    live = live_pod()
    live["metadata"]["annotations"] = {CHECKSUM_ANNOTATION: "precomputed"}  # kubescape's: unused
    (msg,) = s.local_change(PODS, WatchEvent.ADDED, live)
    assert isinstance(msg, NewChecksum)
    assert msg.checksum == expected_fast_digest(shape(PODS, live))
    (entry,) = s.inventory_entries(PODS, [live])
    assert entry[1] == msg.checksum


def test_a_fast_patch_is_verified_and_stored_by_the_backend() -> None:
    s = session()
    (put,) = s.local_change(PODS, WatchEvent.MODIFIED, live_pod(1))
    assert isinstance(put, PutObject)
    stored = StoredCopy(put.checksum, put.object)
    (patch,) = s.local_change(PODS, WatchEvent.MODIFIED, live_pod(2, tier="web"))
    assert isinstance(patch, PatchObject)
    decision = decide(patch, stored)
    assert decision.send == []  # verified: no GetObject
    assert decision.change is not None
    assert decision.change.checksum == patch.checksum  # type: ignore[union-attr]
    body = decision.change.object  # type: ignore[union-attr]
    assert patch.checksum == expected_fast_digest_of_json(body)
    assert orjson.loads(body)["metadata"]["labels"]["tier"] == "web"


def test_a_patch_digest_is_that_of_its_result_where_go_sees_equal_numbers() -> None:
    # 1 -> 1.0 makes no patch (Go compares numbers as float64), so the result keeps 1: the
    # digest must be the result's, not that of the object the agent holds.
    s = session()
    (put,) = s.local_change(PODS, WatchEvent.MODIFIED, live_pod(1))
    changed = live_pod(2, tier="web")
    changed["spec"]["replicas"] = 1.0
    (patch,) = s.local_change(PODS, WatchEvent.MODIFIED, changed)
    assert isinstance(patch, PatchObject)
    decision = decide(patch, StoredCopy(put.checksum, put.object))  # type: ignore[union-attr]
    assert decision.send == [] and decision.change is not None


def test_a_corrupted_fast_checksum_makes_the_backend_ask_again() -> None:
    s = session()
    (put,) = s.local_change(PODS, WatchEvent.MODIFIED, live_pod(1))
    stored = StoredCopy(put.checksum, put.object)  # type: ignore[union-attr]
    live = live_pod(2, tier="web")
    (patch,) = s.local_change(PODS, WatchEvent.MODIFIED, live)
    assert isinstance(patch, PatchObject)
    flipped = patch.checksum[:-1] + ("0" if patch.checksum[-1] != "0" else "1")
    decision = decide(PatchObject(ref=REF, checksum=flipped, patch=patch.patch), stored)
    assert decision.change is None
    (ask,) = decision.send
    assert isinstance(ask, GetObject) and ask.base_object == stored.object
    # The agent answers with a patch against that base, which verifies.
    (reply,) = s.handle(ask, live).send
    assert isinstance(reply, PatchObject) and is_fast(reply.checksum)
    repaired = decide(reply, stored)
    assert repaired.send == [] and repaired.change is not None
    assert orjson.loads(repaired.change.object)["metadata"]["labels"]["tier"] == "web"  # type: ignore[union-attr]


def test_the_agent_verifies_a_checksum_of_either_kind() -> None:
    live = live_pod()
    shaped = shape(PODS, live)
    fast, kubescape = expected_fast_digest(shaped), digest_like(VECTOR_1_SUM, shaped)
    for s in (session(fast=True), session(fast=False)):
        for good in (fast, kubescape):
            assert s.handle(NewChecksum(ref=REF, checksum=good), live).send == []
        for bad in ("cs1:" + "0" * 64, "0" * 64):
            (ask,) = s.handle(NewChecksum(ref=REF, checksum=bad), live).send
            assert isinstance(ask, GetObject)


def test_the_agent_applies_a_backend_patch_verified_by_fast_digest() -> None:
    s = session(fast=False)  # the kind received decides, not the link's
    live = live_pod()
    patch = {"metadata": {"labels": {"tier": "db"}}}
    result = apply_patch(shape(PODS, live), patch)
    good = PatchObject(ref=REF, checksum=expected_fast_digest(result), patch=orjson.dumps(patch))
    (write,) = s.handle(good, live).writes
    assert write.object is not None and write.object["metadata"]["labels"]["tier"] == "db"
    bad = PatchObject(ref=REF, checksum="cs1:" + "0" * 64, patch=orjson.dumps(patch))
    out = s.handle(bad, live)
    assert out.writes == [] and isinstance(out.send[0], GetObject)


def test_switching_servers_never_hands_out_a_cached_checksum_of_the_other_kind() -> None:
    s = session(fast=True)
    live = [live_pod()]
    (fast_entry,) = s.inventory_entries(PODS, live)
    assert FAST_FORM.match(fast_entry[1])
    s.use_fast_digests(False)  # the next server selected clustersync.v1, or none of ours
    (kubescape_entry,) = s.inventory_entries(PODS, live)
    assert KUBESCAPE_FORM.match(kubescape_entry[1])
    (msg,) = s.local_change(PODS, WatchEvent.ADDED, live[0])
    assert isinstance(msg, NewChecksum) and msg.checksum == kubescape_entry[1]
    s.use_fast_digests(True)
    (again,) = s.inventory_entries(PODS, live)
    assert again == fast_entry


def test_a_copy_strategy_put_is_not_skipped_after_switching_kinds() -> None:
    s = session(fast=True)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
          "metadata": {"name": "c", "namespace": "default", "uid": "u", "resourceVersion": "1"}}
    (first,) = s.local_change(CONFIGMAPS, WatchEvent.MODIFIED, cm)
    assert s.local_change(CONFIGMAPS, WatchEvent.MODIFIED, cm) == []  # nothing new
    s.use_fast_digests(False)
    (put,) = s.local_change(CONFIGMAPS, WatchEvent.MODIFIED, cm)
    assert isinstance(put, PutObject) and KUBESCAPE_FORM.match(put.checksum)
    assert put.checksum != first.checksum  # type: ignore[union-attr]
