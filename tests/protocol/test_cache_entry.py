"""The informer cache's entries: the shaped object, what shaping removed, and a header of facts
that let the reconciliation decide on an object without reading it."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from clustersync.model import Kind
from clustersync.protocol import cache_entry
from clustersync.protocol.cache_entry import EntryError, UnencodableError
from clustersync.protocol.checksum import CHECKSUM_ANNOTATION
from clustersync.protocol.compact import Packer
from clustersync.protocol.digest import fast_digest
from clustersync.protocol.shaping import LAST_APPLIED, MASK, shape

PODS = Kind("", "v1", "pods")
DEPLOYMENTS = Kind("apps", "v1", "deployments")
NODES = Kind("", "v1", "nodes")
PROFILES = Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "applicationprofiles")


def pod(name: str = "web-1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "resourceVersion": "42",
            "annotations": {
                "team": "payments",
                LAST_APPLIED: '{"kind":"Pod"}',
                CHECKSUM_ANNOTATION: "abc",
            },
            "managedFields": [{"manager": "kubectl"}],
            **meta,
        },
        "spec": {
            "initContainers": [{"name": "init", "env": [{"name": "A", "value": "init-secret"}]}],
            "containers": [
                {
                    "name": "app",
                    "env": [
                        {"name": "TOKEN", "value": "secret"},
                        {"name": "FROM", "valueFrom": {"secretKeyRef": {"name": "s"}}},
                        {"name": "EMPTY", "value": ""},
                        {"name": "LITERAL", "value": MASK},
                    ],
                },
                {"name": "sidecar"},
            ],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready"}]},
    }


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(obj)
    copied["metadata"].pop("managedFields", None)
    return copied


def entry_of(kind: Kind | None, obj: dict[str, Any], packer: Packer | None = None) -> bytes:
    return cache_entry.encode(kind, obj, packer or Packer())


def test_a_pod_is_held_shaped_and_reads_back_as_it_was() -> None:
    live = pod()
    packer = Packer(samples=1)
    entry = entry_of(PODS, live, packer)
    assert cache_entry.live(PODS, entry, packer) == without_managed_fields(live)
    sent = orjson.loads(cache_entry.shaped_json(entry, packer) or b"")
    values = [e.get("value") for c in sent["spec"]["containers"] for e in c.get("env", [])]
    assert values == [MASK, None, MASK, MASK]
    assert sent["spec"]["initContainers"][0]["env"][0]["value"] == MASK
    assert sent["metadata"]["annotations"] == {"team": "payments"}
    assert "managedFields" not in sent["metadata"]
    assert sent == shape(PODS, live)


def test_the_held_json_is_the_sorted_encoding_and_the_object_is_left_as_it_was() -> None:
    live = pod()
    before = copy.deepcopy(live)
    packer = Packer()
    entry = entry_of(PODS, live, packer)
    assert live == before
    held = cache_entry.shaped_json(entry, packer)
    shaped = shape(PODS, before)
    assert held == json.dumps(shaped, sort_keys=True, separators=(",", ":")).encode()


def test_the_shaped_json_read_after_the_facts_skips_the_header_and_is_the_same() -> None:
    live = pod(uid="u" * 40, resourceVersion="123456789")
    packer = Packer(samples=1)
    entry = entry_of(PODS, live, packer)
    facts = cache_entry.facts(entry)
    # The packed document follows the header: rv length, rv, flags, uid length, uid, digest.
    assert facts.document_at == 2 + len("123456789") + 2 + 40 + 32
    expected = json.dumps(shape(PODS, live), sort_keys=True, separators=(",", ":")).encode()
    assert cache_entry.shaped_json(entry, packer, facts) == expected
    # Facts made elsewhere (no offset) make it read the header as before.
    stand_in = cache_entry.Facts(facts.resource_version, facts.uid, facts.digest, False, True)
    assert cache_entry.shaped_json(entry, packer, stand_in) == expected


def test_entries_packed_after_the_dictionary_was_learned_read_back_too() -> None:
    packer = Packer(samples=2)
    objects = [pod(f"web-{i}") for i in range(5)]
    entries = [entry_of(PODS, obj, packer) for obj in objects]
    assert packer.dictionary is not None
    for obj, entry in zip(objects, entries, strict=True):
        assert cache_entry.live(PODS, entry, packer) == without_managed_fields(obj)


def test_the_header_holds_version_uid_and_the_fast_digest_of_what_is_sent() -> None:
    live = pod()
    facts = cache_entry.facts(entry_of(PODS, live))
    assert (facts.resource_version, facts.uid, facts.version) == ("42", "uid-web-1", "uid-web-1/42")
    assert facts.shaped and not facts.controlled
    assert facts.digest == fast_digest(shape(PODS, live))


def test_a_controller_owned_pod_is_flagged() -> None:
    owned = pod(ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs"}])
    assert cache_entry.facts(entry_of(PODS, owned)).controlled


def test_a_deployment_is_masked_in_its_template_and_restored() -> None:
    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7"},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"value": "s"}]}]}}},
    }
    packer = Packer()
    entry = entry_of(DEPLOYMENTS, live, packer)
    sent = orjson.loads(cache_entry.shaped_json(entry, packer) or b"")
    assert sent["spec"]["template"]["spec"]["containers"][0]["env"] == [{"value": MASK}]
    assert cache_entry.live(DEPLOYMENTS, entry, packer) == live


def test_a_typed_storage_object_keeps_its_env_values_and_loses_only_annotations() -> None:
    live = pod()
    live["kind"] = "ApplicationProfile"
    packer = Packer()
    entry = entry_of(PROFILES, live, packer)
    sent = orjson.loads(cache_entry.shaped_json(entry, packer) or b"")
    assert sent["spec"] == live["spec"]
    assert sent["metadata"]["annotations"] == {"team": "payments"}
    assert cache_entry.live(PROFILES, entry, packer) == without_managed_fields(live)


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        (PODS, {"annotations": {"a": None}}),  # shaped to "": cannot be undone
        (PODS, {"annotations": {"a": 1}}),  # dropped whole by shaping
        (PODS, {"annotations": "not a map"}),
        (PODS, {"uid": 7}),  # not a string: the version would not read back
        (PODS, {"resourceVersion": None}),
        (NODES, {}),  # status.conditions are nulled
        (None, {}),  # a cache that does not know its kind
    ],
)
def test_objects_shaping_cannot_undo_are_held_live_without_facts(
    kind: Kind | None, change: dict[str, Any]
) -> None:
    live = pod()
    live["metadata"].update(change)
    packer = Packer()
    entry = entry_of(kind, live, packer)
    facts = cache_entry.facts(entry)
    assert not facts.shaped and facts.digest is None
    assert cache_entry.shaped_json(entry, packer) is None
    assert cache_entry.shaped_json(entry, packer, facts) is None
    assert cache_entry.live(kind, entry, packer) == without_managed_fields(live)


def test_an_object_kubescape_refuses_to_shape_is_held_live() -> None:
    node = {"kind": "Node", "metadata": {"name": "n", "uid": "u", "resourceVersion": "1"}}
    node["status"] = "not an object"  # nulling status.conditions fails, as in Go
    packer = Packer()
    entry = entry_of(NODES, node, packer)
    assert not cache_entry.facts(entry).shaped
    assert cache_entry.live(NODES, entry, packer) == node


def test_unencodable_objects_are_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(UnencodableError):
        entry_of(PODS, {**pod(), "spec": deep})
    too_deep = pod()
    too_deep["spec"]["deep"] = deep
    env_before = copy.deepcopy(too_deep["spec"]["containers"])
    with pytest.raises(UnencodableError):
        entry_of(PODS, too_deep)
    assert too_deep["spec"]["containers"] == env_before  # the masked values were put back
    with pytest.raises(UnencodableError):
        entry_of(PODS, pod(resourceVersion="9" * 70_000))


def test_damaged_entries_are_errors_not_objects() -> None:
    entry = entry_of(PODS, pod())
    at = 2 + 2  # the flags byte follows the resourceVersion "42"
    unknown_flag = entry[:at] + bytes([0x80]) + entry[at + 1 :]
    with pytest.raises(EntryError):
        cache_entry.facts(unknown_flag)
    with pytest.raises(EntryError):
        cache_entry.facts(entry[:at])


def test_describes_catches_a_header_that_lies() -> None:
    live = pod()
    packer = Packer()
    entry = entry_of(PODS, live, packer)
    read = cache_entry.live(PODS, entry, packer)
    assert cache_entry.describes(PODS, entry, read)
    other = pod()
    other["spec"]["containers"][1]["image"] = "changed"
    assert not cache_entry.describes(PODS, entry, without_managed_fields(other))
    another_uid = {**read, "metadata": {**read["metadata"], "uid": "x"}}
    assert not cache_entry.describes(PODS, entry, another_uid)
