"""The API's OpenAPI 3.1 document (package data) and its reference page.

The page is plain HTML rendered here from the document, with no script and no stylesheet from
elsewhere, so it works offline and behind an air gap; every text from the document is escaped.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from typing import Any

import yaml

_METHODS = ("get", "post", "put", "patch", "delete")


@functools.cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("clustersync.runtime").joinpath("data/openapi.yaml").read_text("utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _ref_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_ref_name(schema.get('items') or {})}"
    return " | ".join(kind) if isinstance(kind, list) else str(kind or "object")


def _resolve(doc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    ref = item.get("$ref")
    if not isinstance(ref, str):
        return item
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _operation(doc: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> str:
    e = html.escape
    anchor = e(op.get("operationId", f"{method}-{path}"))
    rows = []
    for raw in op.get("parameters", []):
        p = _resolve(doc, raw)
        required = " (required)" if p.get("required") else ""
        rows.append(
            f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}{required}</td>"
            f"<td>{e(_ref_name(p.get('schema') or {}))}</td>"
            f"<td>{e(p.get('description', ''))}</td></tr>"
        )
    params = (
        "<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else ""
    )
    answers = []
    for status, raw in op.get("responses", {}).items():
        r = _resolve(doc, raw)
        forms = ", ".join(
            f"{e(media)}: {e(_ref_name(body.get('schema') or {}))}"
            for media, body in (r.get("content") or {}).items()
        )
        answers.append(f"<li><b>{e(status)}</b> {e(r.get('description', ''))} <i>{forms}</i></li>")
    auth = "" if op.get("security") == [] else " <span class=auth>operator token</span>"
    description = f"<p>{e(op['description'])}</p>" if op.get("description") else ""
    return (
        f'<section id="{anchor}"><h3><span class=method>{e(method.upper())}</span> '
        f"<code>{e(path)}</code>{auth}</h3><p>{e(op.get('summary', ''))}</p>{description}"
        f"{params}<ul>{''.join(answers)}</ul></section>"
    )


def _schema(name: str, schema: dict[str, Any]) -> str:
    e = html.escape
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{e(field)}</code>{' *' if field in required else ''}</td>"
        f"<td>{e(_ref_name(body))}</td><td>{e(body.get('description', ''))}</td></tr>"
        for field, body in (schema.get("properties") or {}).items()
    )
    table = f"<table>{rows}</table>" if rows else f"<p>{e(_ref_name(schema))}</p>"
    return f'<section id="schema-{e(name)}"><h3>{e(name)}</h3>{table}</section>'


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code{background:#f3f3f3;padding:0 .2rem}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
.method{color:#fff;background:#2563eb;padding:0 .4rem;border-radius:.2rem;font-size:.9em}
.auth{font-size:.75em;color:#92400e;background:#fef3c7;padding:0 .3rem}
section{border-top:1px solid #eee;padding-top:.5rem}pre{white-space:pre-wrap}
"""


def render_reference(doc: dict[str, Any]) -> str:
    """The document as one self-contained HTML page."""
    e = html.escape
    info = doc.get("info", {})
    operations = [
        _operation(doc, path, method, op)
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
        if method in _METHODS
    ]
    schemas = [
        _schema(name, schema)
        for name, schema in doc.get("components", {}).get("schemas", {}).items()
    ]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(info.get('title', 'API'))}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{e(info.get('title', 'API'))} <small>{e(str(info.get('version', '')))}</small></h1>"
        f"<pre>{e(info.get('description', ''))}</pre>"
        '<p>Machine-readable: <a href="/api/v1/openapi.json">openapi.json</a></p>'
        f"<h2>Routes</h2>{''.join(operations)}<h2>Schemas</h2>{''.join(schemas)}"
        "</body></html>"
    )
