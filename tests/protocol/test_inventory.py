"""Bucketed inventory digests, the backend's narrowed answer, and the agent's narrowed repair."""

from __future__ import annotations

from typing import Any

import pytest

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy, checksum_of
from clustersync.protocol.backend import inventory_answer
from clustersync.protocol.checksum_cache import Entry
from clustersync.protocol.codec import DecodeError, decode, encode
from clustersync.protocol.inventory import BUCKETS, bucket_digests, bucket_of, differing_buckets
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch
from clustersync.protocol.shaping import NamespaceRules, shape

CMS = Kind("", "v1", "configmaps")


def cm(name: str, value: str = "v") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "uid": name, "resourceVersion": "1"},
        "data": {"k": value},
    }


def ref(name: str) -> ObjectRef:
    return ObjectRef(CMS, "default", name)


def inventory_of(live: list[dict[str, Any]]) -> dict[ObjectRef, str]:
    """What a backend in sync with ``live`` holds."""
    return {ref(o["metadata"]["name"]): checksum_of(o, shape(CMS, o)) for o in live}


def test_digests_ignore_order_and_see_every_difference() -> None:
    entries = [(ref(f"cm-{i}"), f"sum-{i}") for i in range(500)]
    digests = bucket_digests(entries)
    assert len(digests) == BUCKETS
    assert bucket_digests(reversed(entries)) == digests
    changed = [*entries[:-1], (entries[-1][0], "other")]
    assert differing_buckets(bucket_digests(changed), digests) == (bucket_of(entries[-1][0]),)
    fewer = entries[1:]
    assert differing_buckets(bucket_digests(fewer), digests) == (bucket_of(entries[0][0]),)
    assert "" in digests or len({bucket_of(r) for r, _ in entries}) == BUCKETS  # empty buckets
    assert differing_buckets(digests, digests[:10]) == tuple(range(BUCKETS))


def session() -> AgentSession:
    return AgentSession({CMS: Strategy.COPY}, NamespaceRules())


def test_an_unchanged_kind_gets_an_empty_answer_and_needs_nothing() -> None:
    agent = session()
    live = [cm(f"cm-{i}") for i in range(50)]
    request = agent.inventory_request(CMS, live)
    assert request.batch_type == BATCH_RECONCILIATION and not request.unrolled()
    answer = inventory_answer(request, inventory_of(live).items())
    assert answer.covered == () and answer.new_checksum == ()
    assert agent.reconcile(answer, live).send == []


def test_only_differing_buckets_are_listed_and_repaired() -> None:
    agent = session()
    live = [cm(f"cm-{i}") for i in range(50)]
    request = agent.inventory_request(CMS, live)
    # The backend lost cm-0, holds a stale cm-1, and still has cm-gone, deleted in the cluster.
    stored = inventory_of(live)
    del stored[ref("cm-0")]
    stored[ref("cm-1")] = "stale"
    stored[ref("cm-gone")] = "whatever"
    answer = inventory_answer(request, stored.items())
    expected = {bucket_of(ref("cm-0")), bucket_of(ref("cm-1")), bucket_of(ref("cm-gone"))}
    assert answer.covered is not None and set(answer.covered) == expected
    assert all(bucket_of(item.ref) in expected for item in answer.new_checksum)
    assert len(answer.new_checksum) < len(stored)
    out = agent.reconcile(answer, live)
    sent = sorted((type(m).__name__, m.ref.name) for m in out.send if not isinstance(m, Batch))
    assert sent == [("ObjectDeleted", "cm-gone"), ("PutObject", "cm-0"), ("PutObject", "cm-1")]


def test_a_request_without_digests_gets_the_whole_kind() -> None:
    request = Batch(kind=CMS, batch_type=BATCH_RECONCILIATION, depth=1, msg_id="m")
    answer = inventory_answer(
        request, [(ref("a"), "x"), (ObjectRef(Kind("", "v1", "pods"), "", "p"), "y")]
    )
    assert answer.covered is None
    assert [item.ref for item in answer.new_checksum] == [ref("a")]
    assert (answer.depth, answer.msg_id) == (2, "m")


def test_digests_and_covered_travel_in_the_codec() -> None:
    batch = Batch(
        kind=CMS,
        batch_type=BATCH_RECONCILIATION,
        digests=("ab", "", "cd"),
        covered=(0, 255),
        depth=1,
        msg_id="m",
    )
    assert decode(encode(batch)) == batch
    plain = Batch(kind=CMS, batch_type=BATCH_RECONCILIATION)
    assert b"Digests" not in encode(plain) and b"Covered" not in encode(plain)
    assert decode(encode(plain)).covered is None


@pytest.mark.parametrize(
    "extra",
    [
        b'"Digests": "ab"',
        b'"Digests": [1]',
        b'"Covered": [256]',
        b'"Covered": [-1]',
        b'"Covered": [true]',
        b'"Covered": "0"',
    ],
)
def test_bad_digests_or_covered_are_rejected(extra: bytes) -> None:
    frame = (
        b'{"Event": 8, "Kind": {"Group": "", "Version": "v1", "Resource": "configmaps"},'
        b' "BatchType": "reconciliation", "Items": {}, ' + extra + b"}"
    )
    with pytest.raises(DecodeError):
        decode(frame)


def test_a_first_inventory_request_skips_the_digests_and_one_pass_repairs_everything() -> None:
    """Before the session has hashed a kind, digests would cost a pass over every object; the
    request goes without them, the backend lists the whole kind and the reconciliation of that
    answer sends exactly what is missing or different, and deletes what is gone."""
    agent = session()
    live = [cm(f"cm-{i}") for i in range(20)]
    assert not agent.inventory_needs_digests(CMS)
    request = agent.inventory_batch(CMS, None)
    assert request.digests == () and b"Digests" not in encode(request)
    stored = inventory_of(live)
    del stored[ref("cm-0")]
    stored[ref("cm-1")] = "stale"
    stored[ref("cm-gone")] = "whatever"
    answer = inventory_answer(request, stored.items())
    assert answer.covered is None and len(answer.new_checksum) == len(stored)
    out = agent.reconcile(answer, live)
    sent = sorted((type(m).__name__, m.ref.name) for m in out.send)
    assert sent == [("ObjectDeleted", "cm-gone"), ("PutObject", "cm-0"), ("PutObject", "cm-1")]
    # Every object was hashed on the way: the next request carries digests, and they agree.
    assert agent.inventory_needs_digests(CMS)
    stored = inventory_of(live)
    again = inventory_answer(agent.inventory_request(CMS, live), stored.items())
    assert again.covered == () and again.new_checksum == ()


def test_digests_are_wanted_per_kind_and_only_for_checksums_of_the_links_algorithm() -> None:
    pods = Kind("", "v1", "pods")
    agent = AgentSession({CMS: Strategy.COPY, pods: Strategy.COPY}, NamespaceRules())
    list(agent.inventory_entries(CMS, [cm("a")]))  # kubescape's hash: the link's algorithm
    assert agent.inventory_needs_digests(CMS)
    assert not agent.inventory_needs_digests(pods)  # nothing of that kind hashed yet
    agent.use_fast_digests(True)  # the next server agreed to fast digests
    assert not agent.inventory_needs_digests(CMS)  # what is held would be hashed again anyway
    list(agent.inventory_entries(CMS, [cm("a")]))
    assert agent.inventory_needs_digests(CMS)


def test_checksums_saved_by_an_earlier_run_make_the_request_carry_digests() -> None:
    agent = session()
    live = cm("a")
    agent.preload_checksums([Entry(ref("a"), "a/1", checksum_of(live, shape(CMS, live)))])
    assert agent.inventory_needs_digests(CMS)
