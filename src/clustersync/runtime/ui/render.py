"""HTML for the dashboard: page templates filled with escaped values.

Every value put into a page is escaped unless it is :class:`Safe`, HTML this module (or a
template) made itself. Object names, labels and YAML come from clusters and are attacker
controlled, so escaping is the default and raw HTML the exception.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from urllib.parse import urlencode


class Safe(str):
    """HTML that is already escaped (or static markup): inserted as it is."""


def escape(value: object) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape(str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Safe:
    return Safe(sep.join(escape(p) for p in parts))


def tag(element: str, content: object = "", **attrs: object) -> Safe:
    """``<element attrs>content</element>``; attribute names use ``_`` for ``-`` and a
    trailing ``_`` for Python keywords (``class_``); None or False drop the attribute."""
    rendered = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        rendered.append(attr if value is True else f'{attr}="{escape(value)}"')
    opening = " ".join([element, *rendered])
    return Safe(f"<{opening}>{escape(content)}</{element}>")


def link(href: str, text: object, **attrs: object) -> Safe:
    return tag("a", text, href=href, **attrs)


def url(path: str, **query: str) -> str:
    """A dashboard URL with its query string (empty values left out)."""
    params = {k: v for k, v in query.items() if v}
    return f"{path}?{urlencode(params)}" if params else path


@cache
def _template(name: str) -> string.Template:
    text = resources.files(__package__).joinpath("templates", name).read_text("utf-8")
    return string.Template(text)


def fill(name: str, values: Mapping[str, object]) -> Safe:
    """The template ``templates/<name>`` with every ``$placeholder`` replaced by its escaped
    value (a missing value is a programming error: KeyError)."""
    return Safe(_template(name).substitute({k: escape(v) for k, v in values.items()}))


def table(headers: Iterable[str], rows: Iterable[Iterable[object]], empty: str,
          **attrs: object) -> Safe:
    head = join(tag("th", h) for h in headers)
    body = [join(tag("td", cell) for cell in row) for row in rows]
    if not body:
        return tag("p", empty, class_="empty")
    return tag(
        "table",
        Safe(
            f"<thead><tr>{head}</tr></thead><tbody>"
            + "".join(f"<tr>{row}</tr>" for row in body)
            + "</tbody>"
        ),
        **attrs,
    )
