"""Log output of every process: readable text, or one JSON object per line (``--log-format json``)
for log collectors, as kubescape's components write theirs.

A JSON line carries ``time`` (RFC 3339, UTC), ``level``, ``logger`` and ``msg``, plus ``msgId``,
``account`` and ``cluster`` where known: from the log call's ``extra=`` or, for a process that
serves one cluster (the agent), from :func:`set_process_context`.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("msgId", "account", "cluster")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_process_context: dict[str, str] = {}


def set_process_context(**fields: str) -> None:
    """Fields every later line of this process carries (e.g. the agent's account and cluster)."""
    _process_context.update({k: v for k, v in fields.items() if k in CONTEXT_FIELDS and v})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or _process_context.get(name)
            if value:
                line[name] = str(value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        # default=str: a message argument orjson cannot encode still gives a line, not a crash.
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
