"""JSON log lines: one object per line, RFC 3339 UTC time, and msgId/account/cluster where known."""

from __future__ import annotations

import json
import logging

import pytest

from clustersync.cli import logs


@pytest.fixture(autouse=True)
def clean_context() -> None:
    logs._process_context.clear()


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("clustersync.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    record.created = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z
    return record


def test_a_line_with_the_call_s_fields() -> None:
    line = logs.JsonFormatter().format(
        _record("write %s refused\nsecond line", "w-1", msgId="w-1", account="a", cluster="c")
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "warning",
        "logger": "clustersync.test",
        "msg": "write w-1 refused\nsecond line",
        "msgId": "w-1",
        "account": "a",
        "cluster": "c",
    }


def test_process_context_fills_what_the_call_does_not_say() -> None:
    logs.set_process_context(account="acct", cluster="prod", other="ignored")
    doc = json.loads(logs.JsonFormatter().format(_record("hello", cluster="override")))
    assert (doc["account"], doc["cluster"]) == ("acct", "override")
    assert "msgId" not in doc and "other" not in doc


def test_an_unencodable_argument_still_gives_a_line() -> None:
    doc = json.loads(logs.JsonFormatter().format(_record("%s", object(), msgId=b"\xff")))
    assert doc["msg"].startswith("<object object")
    assert doc["msgId"] == "b'\\xff'"
