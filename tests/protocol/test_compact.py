"""The packer: deflate against a dictionary learned from the first documents."""

from __future__ import annotations

import orjson
import pytest

from clustersync.protocol.compact import Packer, PackError


def doc(i: int) -> bytes:
    return orjson.dumps(
        {
            "metadata": {"name": f"pod-{i}", "namespace": "team", "uid": f"{i:032x}"},
            "spec": {"containers": [{"name": "app", "image": f"registry/app:{i % 7}"}]},
            "status": {"phase": "Running", "podIP": f"10.0.{i // 256}.{i % 256}"},
        }
    )


def test_round_trips_before_and_after_the_dictionary_is_learned() -> None:
    packer = Packer(samples=3)
    packed = [packer.pack(doc(i)) for i in range(10)]
    assert packer.dictionary is not None
    assert [packer.unpack(p) for p in packed] == [doc(i) for i in range(10)]


def test_the_dictionary_is_the_first_samples_and_stays() -> None:
    packer = Packer(samples=3)
    for i in range(3):
        packer.pack(doc(i))
    assert packer.dictionary == doc(0) + doc(1) + doc(2)
    for i in range(3, 20):
        packer.pack(doc(i))
    assert packer.dictionary == doc(0) + doc(1) + doc(2)


def test_packing_against_the_dictionary_is_smaller_than_alone() -> None:
    learned, alone = Packer(samples=3), Packer(samples=1_000)
    for i in range(3):
        learned.pack(doc(i))
    assert len(learned.pack(doc(50))) < len(alone.pack(doc(50)))


def test_empty_document_round_trips() -> None:
    packer = Packer(samples=1)
    packer.pack(doc(0))
    assert packer.unpack(packer.pack(b"")) == b""


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p[:-3],  # truncated
        lambda p: b"\x07" + p[1:],  # unknown tag
        lambda p: p[:1] + b"\xff" * 8 + p[9:],  # garbled deflate stream
        lambda p: b"",  # nothing at all
    ],
)
def test_damaged_bytes_are_refused(damage: object) -> None:
    packer = Packer(samples=1)
    packer.pack(doc(0))
    packed = packer.pack(doc(1))
    assert callable(damage)
    with pytest.raises(PackError):
        packer.unpack(damage(packed))


def test_a_primed_entry_needs_its_dictionary() -> None:
    teacher = Packer(samples=1)
    teacher.pack(doc(0))
    primed = teacher.pack(doc(1))
    with pytest.raises(PackError):
        Packer().unpack(primed)  # no dictionary learned yet


def test_a_packer_given_the_dictionary_reads_what_the_learner_packed() -> None:
    """How a restored cache reads the entries saved with its dictionary."""
    learner = Packer(samples=3)
    packed = [learner.pack(doc(i)) for i in range(6)]
    assert learner.dictionary is not None
    reader = Packer(dictionary=learner.dictionary)
    assert [reader.unpack(p) for p in packed] == [doc(i) for i in range(6)]
    assert reader.unpack(reader.pack(doc(7))) == doc(7)


def test_a_frame_claiming_a_huge_content_is_refused_not_allocated() -> None:
    packer = Packer(samples=1)
    packer.pack(doc(0))
    header = b"\x28\xb5\x2f\xfd" + b"\xe0" + (2**40).to_bytes(8, "little")  # 1 TiB of content
    with pytest.raises(PackError):
        packer.unpack(b"\x02" + header + b"\x01\x00\x00")
