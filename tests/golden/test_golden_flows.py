"""Multi-step flows recorded from kubescape's agent (and a backend using the same functions).

Each recorded step is re-run with our implementation; then each hop checks interoperation both
ways: our backend accepts the Go agent's patch, and a Go backend accepts what our agent sends.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from golden_cases import cases, same_document

from clustersync.model import Kind, ObjectRef
from clustersync.protocol import codec, gojson
from clustersync.protocol.agent import AgentSession
from clustersync.protocol.agent_types import Strategy, WatchEvent
from clustersync.protocol.backend import StoredCopy, Upsert, decide
from clustersync.protocol.checksum import checksum_of_json
from clustersync.protocol.mergepatch import apply_patch, create_patch, is_noop_patch
from clustersync.protocol.messages import GetObject, NewChecksum, PatchObject
from clustersync.protocol.shaping import NamespaceRules, shape

FLOWS = cases("flows.json")


def _kind(case: dict[str, Any]) -> Kind:
    kind = case["input"]["kind"]
    return Kind(kind["group"], kind["version"], kind["resource"])


def _ref(case: dict[str, Any], obj: dict[str, Any]) -> ObjectRef:
    meta = obj["metadata"]
    return ObjectRef(_kind(case), meta.get("namespace", ""), meta["name"])


def _session(kind: Kind) -> AgentSession:
    return AgentSession({kind: Strategy.PATCH}, NamespaceRules())


def _rerun_step(step: dict[str, Any]) -> None:
    given = step["inputs"]
    op = step["op"]
    if op == "create_patch":
        ours = create_patch(gojson.loads(given["original"]), gojson.loads(given["modified"]))
        assert same_document(ours, step["output"])
    elif op == "apply_patch":
        ours = apply_patch(gojson.loads(given["document"]), gojson.loads(given["patch"]))
        assert same_document(ours, step["output"])
    elif op == "canonical_hash":
        assert checksum_of_json(given["json"]) == step["output"]
    elif op == "empty_patch_regex":
        patch = gojson.loads(given["patch"])
        # Deliberate difference (docs/kubescape.md): we also skip the empty patch, Go sends it.
        assert is_noop_patch(patch) == (step["output"] or patch == {})
    else:
        # strict_rfc7386_apply is the recorder's own strict applier, not kubescape behaviour.
        assert op == "strict_rfc7386_apply"


@pytest.mark.parametrize("case", FLOWS)
def test_every_recorded_step(case: dict[str, Any]) -> None:
    for step in case["expected"]["steps"]:
        _rerun_step(step)


def _hop_cases() -> list[Any]:
    return [p for p in FLOWS if p.values[0]["input"]["scenario"] == "agent_patch_loop"]


@pytest.mark.parametrize("case", _hop_cases())
def test_our_backend_accepts_the_go_agents_patches(case: dict[str, Any]) -> None:
    hops = case["input"]["hops"]
    stored = hops[0].encode()
    ref = _ref(case, gojson.loads(hops[0]))
    for outcome in case["expected"]["outcomes"]:
        if outcome.get("backend") != "accepted":
            continue
        msg = PatchObject(
            ref=ref, checksum=outcome["checksum_sent"], patch=outcome["patch"].encode(), depth=1
        )
        decision = decide(msg, StoredCopy(checksum_of_json(stored), stored))
        assert decision.send == [], f"hop {outcome['hop']}: asked again instead of accepting"
        assert isinstance(decision.change, Upsert)
        assert decision.change.checksum == outcome["backend_checksum"]
        assert same_document(gojson.loads(decision.change.object), outcome["stored_after"])
        stored = decision.change.object


@pytest.mark.parametrize("case", _hop_cases())
def test_a_go_backend_accepts_our_agents_patches(case: dict[str, Any]) -> None:
    hops = case["input"]["hops"]
    kind = _kind(case)
    session = _session(kind)
    ref = _ref(case, gojson.loads(hops[0]))
    session.shadows[ref] = hops[0].encode()
    stored = gojson.loads(hops[0])
    for outcome in case["expected"]["outcomes"]:
        live = gojson.loads(hops[outcome["hop"]])
        sent = session.local_change(kind, WatchEvent.MODIFIED, live)
        if "agent" in outcome or outcome["patch"] == "{}":
            # Go skipped this hop (resourceVersion-only patch), or sent an empty patch, which we
            # deliberately skip too (docs/kubescape.md): the backend already has this state.
            assert sent == []
            continue
        [msg] = sent
        assert isinstance(msg, PatchObject)
        assert msg.checksum == outcome["backend_checksum"]
        # The Go backend applies our patch with the same MergePatch (vectors above) and hashes.
        stored = apply_patch(stored, gojson.loads(msg.patch))
        assert same_document(stored, outcome["stored_after"])
        assert same_document(gojson.loads(session.shadows[ref]), outcome["shadow_after"])


def _single_step_cases(scenario: str) -> list[Any]:
    return [p for p in FLOWS if p.values[0]["input"]["scenario"] == scenario]


def _received_checksum(case: dict[str, Any]) -> str:
    [outcome] = case["expected"]["outcomes"]
    return str(outcome["checksum_received"])


@pytest.mark.parametrize("case", _single_step_cases("agent_patch_object"))
def test_our_agent_applies_a_backend_patch_like_go(case: dict[str, Any]) -> None:
    kind = _kind(case)
    live = gojson.loads(case["input"]["live"])
    ref = _ref(case, live)
    msg = PatchObject(
        ref=ref,
        checksum=_received_checksum(case),
        patch=case["input"]["patch"].encode(),
        depth=1,
        msg_id="flow-1",
    )
    out = _session(kind).handle(msg, live)
    [outcome] = case["expected"]["outcomes"]
    if "frame" in outcome:
        assert out.writes == []
        assert out.send == [_go_get_object(outcome["frame"], ref)]
    else:
        assert out.send == []
        [write] = out.writes
        assert write.object is not None
        assert checksum_of_json(orjson.dumps(write.object)) == outcome["checksum_computed"]


@pytest.mark.parametrize("case", _single_step_cases("agent_verify_object"))
def test_our_agent_verifies_like_go(case: dict[str, Any]) -> None:
    kind = _kind(case)
    [outcome] = case["expected"]["outcomes"]
    # The recorded "live" is the agent's already filtered object (its env values unmasked even
    # where shaping would mask them): our session shapes, so it runs only where shaping is a no-op.
    assert checksum_of_json(case["input"]["live"]) == outcome["checksum_computed"]
    live = gojson.loads(case["input"]["live"])
    if not same_document(shape(kind, live), case["input"]["live"]):
        return
    ref = _ref(case, live)
    msg = NewChecksum(ref=ref, checksum=_received_checksum(case), depth=1, msg_id="flow-1")
    out = _session(kind).handle(msg, live)
    if "frame" in outcome:
        assert out.send == [_go_get_object(outcome["frame"], ref)]
    else:
        assert out.send == []


def _go_get_object(frame: str, ref: ObjectRef) -> GetObject:
    """The GetObject in Go's frame, for our object (the recorder named the object "x")."""
    decoded = codec.decode(frame.encode())
    assert isinstance(decoded, GetObject)
    assert decoded.ref.kind == ref.kind and decoded.base_object is None
    return GetObject(ref=ref, depth=decoded.depth, msg_id=decoded.msg_id)
