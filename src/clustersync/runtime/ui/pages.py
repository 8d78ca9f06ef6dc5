"""The dashboard's page parts: the layout, the fleet table's rows, the object browser's
filters, the writes table, and small formatting helpers. They return escaped HTML
(:class:`~clustersync.runtime.ui.render.Safe`) or plain values; the routes are in ``dashboard``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from clustersync.adapters.store import StoredObject, WriteRecord
from clustersync.runtime.ui.fleet import ClusterRow
from clustersync.runtime.ui.render import Safe, escape, fill, join, link, table, tag, url
from clustersync.runtime.ui.sessions import Session

MAX_LISTED = 500  # objects shown on one cluster page; narrow with the filters for more
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NAV = (("Fleet", "/ui/"), ("Backend writes", "/ui/writes"), ("Dead letters", "/ui/deadletters"),
       ("API reference", "/api/v1/docs"))
MAX_WRITES = 200  # rows on the audit page, newest first


def when(epoch: float | None) -> str:
    if not epoch:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def page(title: str, session: Session, body: Safe, *, flash: str = "", error: bool = False,
         status: int = 200) -> web.Response:
    """A whole dashboard page: the layout around ``body``, with an optional notice."""
    nav = join(link(href, text) for text, href in NAV)
    notice = tag("div", flash, class_="flash error" if error else "flash", role="status")
    html = fill("layout.html", {
        "title": title, "nav": nav, "csrf": session.csrf, "body": body,
        "flash": notice if flash else Safe(""),
    })
    return web.Response(text=html, content_type="text/html", status=status,
                        headers=SECURITY_HEADERS)


def see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location, headers=SECURITY_HEADERS)


# static/app.js redraws the same columns in the same order.
FLEET_COLUMNS = ("Cluster", "State", "Objects", "Kinds", "Initial sync", "Last seen", "Agent",
                 "Backend writes", "Dead letters")


def seen(value: float | str | None) -> str:
    if isinstance(value, int | float):
        return when(value)
    return value or "—"


def fleet_row(r: ClusterRow) -> Safe:
    """One row of the fleet table, as the page is first served (app.js redraws it live)."""
    name = join([link(f"/ui/clusters/{quote_part(r.account)}/{quote_part(r.cluster)}", r.cluster),
                 tag("div", r.account, class_="muted")])
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(r.kinds.items())) or "—"
    bars = join(
        tag("div", join([
            tag("progress", f"{p.stored} / {p.listed}", value=min(p.stored, p.listed),
                max=p.listed, title=kind),
            f" {p.stored} / {p.listed} {kind}",
        ]), class_="progress", data_kind=kind)
        for kind, p in sorted(r.syncing.items())
    ) or tag("span", "—", class_="muted")
    cells = [
        tag("td", name),
        tag("td", tag("span", r.state, class_=f"badge {r.state}"), class_="state"),
        tag("td", r.objects, class_="num objects"),
        tag("td", kinds, class_="kinds"),
        tag("td", bars, class_="sync"),
        tag("td", seen(r.last_seen)),
        tag("td", r.agent_version or "—"),
        tag("td", link(url("/ui/writes", account=r.account, cluster=r.cluster),
                       ", ".join(f"{n} {s}" for s, n in sorted(r.writes.items())))
            if r.writes else "—", class_="writes"),
        tag("td", r.dead_letters, class_="num dead"),
    ]
    return Safe(f'<tr data-cluster="{escape(r.account)}/{escape(r.cluster)}">'
                + "".join(cells) + "</tr>")


def labels_match(obj: dict[str, Any], selector: str) -> bool:
    """kubectl's equality selector: ``a=b,c!=d,e`` (key present)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip().removeprefix("="):
                return False
        elif term not in labels:
            return False
    return True


def matches(row: StoredObject, query: Any) -> bool:
    ref = row.key.ref
    if query.get("namespace") and ref.namespace != query["namespace"]:
        return False
    search = query.get("q", "").strip().lower()
    if search and search not in ref.name.lower():
        return False
    selector = query.get("labels", "").strip()
    return not selector or labels_match(orjson.loads(row.object), selector)


def filters(base: str, kind: str, kinds: list[str], namespaces: list[str],
            query: Any) -> Safe:
    def select(name: str, label: str, options: list[str], chosen: str) -> Safe:
        opts = [tag("option", "any", value="")] + [
            tag("option", o, value=o, selected=o == chosen) for o in options
        ]
        return tag("label", join([label, tag("select", join(opts), name=name)]))

    def text(name: str, label: str, placeholder: str) -> Safe:
        return tag("label", join([label, Safe(
            f'<input type="search" name="{name}" value="{escape(query.get(name, ""))}" '
            f'placeholder="{escape(placeholder)}">'
        )]))

    return tag("form", join([
        select("kind", "Kind", kinds, kind),
        select("namespace", "Namespace", namespaces, query.get("namespace", "")),
        text("q", "Name contains", "web"),
        text("labels", "Labels", "app=web,tier!=db"),
        tag("button", "Filter", type="submit", class_="primary"),
        link(base, "Clear"),
    ]), method="get", action=base, class_="filters", role="search")


def object_url(row: StoredObject) -> str:
    ref = row.key.ref
    return url(f"/ui/clusters/{quote_part(row.key.account)}/{quote_part(row.key.cluster)}/object",
               kind=str(ref.kind), namespace=ref.namespace, name=ref.name)


def writes_table(writes: list[WriteRecord], with_object: bool) -> Safe:
    def row(w: WriteRecord) -> list[object]:
        cells: list[object] = [when(w.created_at), w.verb]
        if with_object:
            ref = w.ref
            target = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
            href = url(f"/ui/clusters/{quote_part(w.account)}/{quote_part(w.cluster)}/object",
                       kind=str(ref.kind), namespace=ref.namespace, name=ref.name)
            cells += [f"{w.account}/{w.cluster}", join([
                link(href, target), tag("div", str(ref.kind), class_="muted")])]
        status = tag("span", w.status.value, class_=f"badge write-{w.status.value}")
        return [*cells, status, w.reason or "—", when(w.updated_at),
                tag("code", w.id, class_="muted")]

    headers = ["Requested", "Verb"]
    if with_object:
        headers += ["Cluster", "Object"]
    headers += ["Outcome", "Reason", "Settled", "Write id"]
    return table(headers, (row(w) for w in writes), id="writes",
                 empty="No backend write recorded (or purged after retention).")


def quote_part(part: str) -> str:
    return quote(part, safe="")


def parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def readable(data: bytes) -> str:
    """A parked message for reading: pretty JSON when it is JSON (with the object a message
    carries as JSON text unfolded too), else the text as it is."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")
    message = doc.get("message") if isinstance(doc, dict) else None
    if isinstance(message, dict) and isinstance(message.get("Object"), str):
        with contextlib.suppress(orjson.JSONDecodeError):  # not JSON: shown as the string
            message["Object"] = orjson.loads(message["Object"])
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
