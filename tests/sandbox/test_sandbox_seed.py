"""load_seed input formats and errors (no server needed)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from clustersync.sandbox import SeedError, load_seed
from clustersync.sandbox.seed import iter_seed

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}


def test_json_list(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_bytes(orjson.dumps([POD, NODE]))
    assert load_seed(path) == [POD, NODE]


def test_list_kind(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": [POD, NODE]}))
    assert load_seed(str(path)) == [POD, NODE]


def test_multi_document_yaml(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
        "---\n"
        "# an empty document is skipped\n"
        "---\n"
        "apiVersion: v1\nkind: ConfigMapList\nitems:\n"
        "- apiVersion: v1\n  kind: Node\n  metadata: {name: n}\n"
    )
    assert load_seed(path) == [POD, NODE]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n", "invalid YAML"),
        ("kind: Pod\nmetadata: {name: p}\n", "missing apiVersion"),
        ("apiVersion: v1\nmetadata: {name: p}\n", "missing kind"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "without metadata.name"),
        ("- 1\n- 2\n", "expected an object"),
        ("apiVersion: v1\nkind: List\nitems: 3\n", "items is not a list"),
    ],
)
def test_bad_seed(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SeedError) as err:
        load_seed(path)
    message = str(err.value)
    assert needle in message and "\n" not in message and str(path) in message


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{oops")
    with pytest.raises(SeedError, match="invalid JSON"):
        load_seed(path)
    with pytest.raises(SeedError, match="cannot read"):
        load_seed(tmp_path / "absent.yaml")


def test_json_array_is_read_element_by_element(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    nested = {"apiVersion": "v1", "kind": "List", "items": [NODE]}
    path.write_text(f" [\n {orjson.dumps(POD).decode()} ,\n{orjson.dumps(nested).decode()}\n] \n")
    assert load_seed(path) == [POD, NODE]
    path.write_text("[]")
    assert load_seed(path) == []


def test_iter_seed_yields_good_objects_before_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_bytes(orjson.dumps([POD, NODE, {"kind": "Pod"}]))
    objects = iter_seed(path)
    assert [next(objects), next(objects)] == [POD, NODE]
    with pytest.raises(SeedError, match="object 3: missing apiVersion"):
        next(objects)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (f"[{orjson.dumps(POD).decode()},]", "invalid JSON"),
        (f"[{orjson.dumps(POD).decode()} {orjson.dumps(NODE).decode()}]", "expected ',' or ']'"),
        (f"[{orjson.dumps(POD).decode()}] trailing", "extra data after the array"),
        (f"[{orjson.dumps(POD).decode()}", "invalid JSON"),
        ("[5]", "object 1: expected an object"),
    ],
)
def test_bad_json_array(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SeedError) as err:
        load_seed(path)
    message = str(err.value)
    assert needle in message and "\n" not in message and str(path) in message
