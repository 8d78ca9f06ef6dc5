"""The dashboard's routes under ``/ui``: login, fleet, clusters, objects, dead letters.

Pages are rendered on the server from ``templates/`` with every value escaped (see ``render``);
the only script is our own ``static/app.js``, which polls ``/ui/fleet.json`` for live updates.
The Content-Security-Policy allows scripts and styles from this origin only, so even a missed
escape could not run an injected script.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources

import orjson
import yaml
from aiohttp import web

from clustersync.adapters.bus import Bus, BusError
from clustersync.adapters.metrics import bad_input
from clustersync.adapters.store import ObjectKey, Store, StoreError
from clustersync.model import Kind, KindError, ObjectRef
from clustersync.model.identity import TokenTable
from clustersync.protocol.messages import WriteStatus
from clustersync.runtime.ui.fleet import ClusterRow, LinkSource, StateReader, fleet
from clustersync.runtime.ui.pages import (
    FLEET_COLUMNS,
    MAX_LISTED,
    MAX_WRITES,
    SECURITY_HEADERS,
    STATIC,
    filters,
    fleet_row,
    matches,
    object_url,
    page,
    parse_int,
    quote_part,
    readable,
    see_other,
    when,
    writes_table,
)
from clustersync.runtime.ui.render import Safe, escape, fill, join, link, table, tag, url
from clustersync.runtime.ui.sessions import COOKIE, Session, Sessions, csrf_ok

log = logging.getLogger("clustersync.ui")

Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


class Dashboard:
    """The ``/ui`` routes of one process; ``links`` reports the agent connections this process
    holds (None in a process without agent sockets), ``states`` reads the connection facts and
    sync progress replicas share through the store."""

    def __init__(self, store: Store, bus: Bus, tokens: TokenTable, *,
                 links: LinkSource | None = None, states: StateReader | None = None,
                 sessions: Sessions | None = None) -> None:
        self.store = store
        self.bus = bus
        self.tokens = tokens
        self.links = links
        self.states = states
        self.sessions = sessions or Sessions()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ui", self.root)
        app.router.add_get("/ui/login", self.login_form)
        app.router.add_post("/ui/login", self.login)
        app.router.add_get("/ui/static/{name}", self.static)
        guarded: list[tuple[str, str, Handler]] = [
            ("GET", "/ui/", self.fleet_page),
            ("GET", "/ui/fleet.json", self.fleet_json),
            ("POST", "/ui/logout", self.logout),
            ("GET", "/ui/clusters/{account}/{cluster}", self.cluster_page),
            ("GET", "/ui/clusters/{account}/{cluster}/object", self.object_page),
            ("GET", "/ui/writes", self.writes_page),
            ("GET", "/ui/deadletters", self.dead_letters_page),
            ("GET", "/ui/deadletters/{id}", self.dead_letter_page),
            ("POST", "/ui/deadletters/{id}/replay", self.replay),
            ("POST", "/ui/deadletters/{id}/drop", self.drop),
        ]
        for method, path, handler in guarded:
            app.router.add_route(method, path, self._guard(handler, json=path.endswith(".json")))

    # ------------------------------------------------------------ sessions

    def _session(self, request: web.Request) -> Session | None:
        session = self.sessions.find(request.cookies.get(COOKIE))
        if session is None:
            return None
        identity = self.tokens.identify(session.token)
        if identity is None or not identity.admin:  # the token was revoked since login
            self.sessions.close(session.id)
            return None
        return session

    def _guard(self, handler: Handler, json: bool) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]
    ]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            if session is None:
                if json:
                    return web.json_response({"error": "log in first"}, status=401)
                raise see_other("/ui/login")
            if request.method == "POST":
                form = await request.post()
                submitted = form.get("csrf")
                if not csrf_ok(session, submitted if isinstance(submitted, str) else None):
                    bad_input("ui", "csrf")
                    log.warning("dashboard form refused: missing or wrong CSRF token (%s %s)",
                                request.method, request.path)
                    return page("Refused", session, tag(
                        "p", "This form was not sent by this dashboard page (CSRF token "
                        "missing or wrong). Go back, reload the page and try again."),
                        error=True, status=403)
            try:
                return await handler(request, session)
            except StoreError as exc:  # down or restarting: say so, and let the page retry
                log.error("dashboard page %s failed: the store: %s", request.path, exc)
                message = f"The store is unavailable right now: {exc}"
                if json:
                    return web.json_response({"error": message}, status=503,
                                             headers={"Retry-After": "5"})
                return page("Store unavailable", session, tag(
                    "p", "Reload the page in a few seconds."), flash=message, error=True,
                    status=503)

        return guarded

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise see_other("/ui/")

    async def login_form(self, request: web.Request, error: str = "",
                         status: int = 200) -> web.Response:
        message = tag("p", error, class_="error", role="alert") if error else Safe("")
        return web.Response(text=fill("login.html", {"error": message}), status=status,
                            content_type="text/html", headers=SECURITY_HEADERS)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        identity = self.tokens.identify(token if isinstance(token, str) else None)
        if identity is None or not identity.admin:
            bad_input("ui", "login")
            log.warning("dashboard login refused from %s", request.remote)
            return await self.login_form(
                request, "That token is not an admin token of this backend.", status=401
            )
        assert isinstance(token, str)
        session = self.sessions.open(token)
        response = see_other("/ui/")
        response.set_cookie(COOKIE, session.id, path="/ui", httponly=True, samesite="Strict",
                            secure=request.secure)
        raise response

    async def logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        self.sessions.close(session.id)
        response = see_other("/ui/login")
        response.del_cookie(COOKIE, path="/ui")
        raise response

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=STATIC[name],
                            headers={"Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})

    # ------------------------------------------------------------ fleet

    async def _fleet(self) -> list[ClusterRow]:
        return await fleet(self.store, self.tokens, self.links, self.states)

    async def fleet_json(self, request: web.Request, session: Session) -> web.Response:
        rows = await self._fleet()
        return web.json_response(
            {"clusters": [r.as_json() for r in rows], "at": time.time()},
            dumps=lambda v: orjson.dumps(v).decode(), headers={"Cache-Control": "no-store"},
        )

    async def fleet_page(self, request: web.Request, session: Session) -> web.Response:
        rows = await self._fleet()
        head = join(tag("th", h) for h in FLEET_COLUMNS)
        fleet_table = Safe(
            '<table id="fleet" data-source="/ui/fleet.json"><thead><tr>' + head
            + "</tr></thead><tbody>" + "".join(fleet_row(r) for r in rows) + "</tbody></table>"
        )
        intro = tag("p", join([
            f"{len(rows)} clusters. ",
            tag("span", "live", id="live-status", class_="live"),
        ]), class_="muted")
        return page("Fleet", session, join([intro, fleet_table]))

    # ------------------------------------------------------------ one cluster

    async def cluster_page(self, request: web.Request, session: Session) -> web.Response:
        account, cluster = request.match_info["account"], request.match_info["cluster"]
        query = request.query
        base = f"/ui/clusters/{quote_part(account)}/{quote_part(cluster)}"
        kind_text = query.get("kind", "")
        try:
            kind = Kind.parse(kind_text) if kind_text else None
        except KindError as exc:
            bad_input("ui", "kind")
            return page(cluster, session, Safe(""), flash=str(exc), error=True, status=400)
        counts = {str(c.kind): c.count for c in await self.store.count_kinds(account, cluster)}
        total = sum(counts.values())
        # The store narrows by kind; namespace, name and labels are matched here (a name part
        # and a label selector are not store queries), over one kind's rows at most.
        candidates = await self.store.list(account, cluster, kind)
        namespaces = sorted({r.key.ref.namespace for r in candidates if r.key.ref.namespace})
        rows = [r for r in candidates if matches(r, query)]

        kind_cards = join(
            link(url(base, kind=k), join([k, tag("b", n)]),
                 class_="current" if k == kind_text else None)
            for k, n in sorted(counts.items())
        )
        narrowing = filters(base, kind_text, sorted(counts), namespaces, query)
        shown = rows[:MAX_LISTED]
        objects = table(
            ("Kind", "Namespace", "Name", "Resource version", "Updated"),
            (
                (
                    str(r.key.ref.kind),
                    r.key.ref.namespace or "—",
                    link(object_url(r), r.key.ref.name),
                    r.resource_version,
                    when(r.updated_at),
                )
                for r in shown
            ),
            empty="No object matches." if total else "The backend holds no object of "
            "this cluster yet.",
            id="objects",
        )
        more = (tag("p", f"Showing {MAX_LISTED} of {len(rows)}: narrow the filters.",
                    class_="muted") if len(rows) > MAX_LISTED else Safe(""))
        body = join([
            tag("p", f"Account {account} · {total} objects", class_="muted"),
            tag("h2", "Kinds"),
            tag("div", kind_cards or tag("span", "none yet", class_="muted"), class_="cards",
                id="kinds"),
            tag("h2", f"Objects ({len(rows)})"),
            narrowing, objects, more,
        ])
        return page(cluster, session, body)

    async def object_page(self, request: web.Request, session: Session) -> web.Response:
        account, cluster = request.match_info["account"], request.match_info["cluster"]
        query = request.query
        try:
            kind = Kind.parse(query.get("kind", ""))
        except KindError as exc:
            bad_input("ui", "kind")
            return page("Object", session, Safe(""), flash=str(exc), error=True, status=400)
        ref = ObjectRef(kind, query.get("namespace", ""), query.get("name", ""))
        row = await self.store.get(ObjectKey(account, cluster, ref))
        title = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
        cluster_url = f"/ui/clusters/{quote_part(account)}/{quote_part(cluster)}"
        back = link(url(cluster_url, kind=str(kind)), f"← {cluster}: {kind}")
        if row is None:
            return page(title or "Object", session, tag("p", back),
                         flash="The backend holds no such object (deleted, or not synced yet).",
                         error=True, status=404)
        facts = join(
            join([tag("dt", k), tag("dd", v)])
            for k, v in (
                ("Cluster", f"{account}/{cluster}"), ("Kind", str(kind)),
                ("Namespace", ref.namespace or "— (cluster scoped)"), ("Name", ref.name),
                ("UID", row.uid or "—"), ("Resource version", row.resource_version or "—"),
                ("Checksum", row.checksum or "—"), ("Stored", when(row.updated_at)),
            )
        )
        document = yaml.safe_dump(orjson.loads(row.object), sort_keys=False,
                                  default_flow_style=False, allow_unicode=True)
        body = join([
            tag("p", back),
            tag("dl", facts, class_="facts", id="facts"),
            tag("h2", "YAML"),
            tag("pre", tag("code", document), id="yaml"),
            tag("h2", "Backend writes"),
            writes_table(
                await self.store.recent_writes(account, cluster, ref, MAX_WRITES),
                with_object=False,
            ),
        ])
        return page(title, session, body)

    # ------------------------------------------------------------ backend writes

    async def writes_page(self, request: web.Request, session: Session) -> web.Response:
        query = request.query
        account, cluster = query.get("account") or None, query.get("cluster") or None
        status = query.get("status", "")
        writes = await self.store.recent_writes(account, cluster, None, MAX_WRITES)
        if status:
            writes = [w for w in writes if w.status.value == status]
        choices = [tag("option", "any", value="")] + [
            tag("option", s.value, value=s.value, selected=s.value == status)
            for s in WriteStatus
        ]
        filters = tag("form", join([
            tag("label", join(["Account", Safe(
                f'<input name="account" value="{escape(account or "")}">')])),
            tag("label", join(["Cluster", Safe(
                f'<input name="cluster" value="{escape(cluster or "")}">')])),
            tag("label", join(["Outcome", tag("select", join(choices), name="status")])),
            tag("button", "Filter", type="submit", class_="primary"),
            link("/ui/writes", "Clear"),
        ]), method="get", action="/ui/writes", class_="filters")
        intro = tag("p", f"The newest {MAX_WRITES} writes the API accepted, with what became of "
                    "each (kubescape agents report no outcome: their writes stay 'sent').",
                    class_="muted")
        return page("Backend writes", session,
                     join([intro, filters, writes_table(writes, with_object=True)]))

    # ------------------------------------------------------------ dead letters

    async def dead_letters_page(self, request: web.Request, session: Session) -> web.Response:
        letters = await self.store.dead_letters(500)
        body = table(
            ("Id", "Subject", "Size", "Reason", "Parked"),
            (
                (link(f"/ui/deadletters/{d.id}", d.id), d.subject, f"{len(d.data)} B",
                 d.reason, when(d.parked_at))
                for d in letters
            ),
            empty="No dead letters: every message was delivered or applied.",
            id="deadletters",
        )
        flash = {"replayed": "Replayed: the message is back on its subject.",
                 "dropped": "Dropped."}.get(request.query.get("done", ""), "")
        return page("Dead letters", session, body, flash=flash)

    async def dead_letter_page(self, request: web.Request, session: Session) -> web.Response:
        letter_id = parse_int(request.match_info["id"])
        letter = await self.store.dead_letter(letter_id) if letter_id is not None else None
        if letter is None:
            return page("Dead letter", session, tag("p", link("/ui/deadletters", "← all")),
                         flash="No such dead letter (replayed or dropped already?).",
                         error=True, status=404)
        facts = join(
            join([tag("dt", k), tag("dd", v)])
            for k, v in (("Id", letter.id), ("Subject", letter.subject),
                         ("Reason", letter.reason), ("Parked", when(letter.parked_at)),
                         ("Size", f"{len(letter.data)} B"))
        )

        def action(verb: str, label: str, css: str, confirm: str) -> Safe:
            return tag("form", join([
                Safe(f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'),
                tag("button", label, type="submit", class_=css),
            ]), method="post", action=f"/ui/deadletters/{letter.id}/{verb}",
                data_confirm=confirm)

        body = join([
            tag("p", link("/ui/deadletters", "← all dead letters")),
            tag("dl", facts, class_="facts"),
            tag("div", join([
                action("replay", "Replay", "primary",
                       "Publish this message again on its subject?"),
                action("drop", "Drop", "danger", "Delete this message for good?"),
            ]), class_="actions"),
            tag("h2", "Message"),
            tag("pre", tag("code", readable(letter.data)), id="message"),
        ])
        return page(f"Dead letter {letter.id}", session, body)

    async def replay(self, request: web.Request, session: Session) -> web.StreamResponse:
        # Imported here: services builds this dashboard, so a module-level import would cycle.
        from clustersync.runtime.services import replay_dead_letter

        letter_id = parse_int(request.match_info["id"])
        letter = await self.store.dead_letter(letter_id) if letter_id is not None else None
        if letter is None:
            raise see_other("/ui/deadletters")
        try:
            seq = await replay_dead_letter(self.store, self.bus, letter)
        except BusError as exc:
            log.error("dead letter %d not replayed: %s", letter.id, exc)
            return page(f"Dead letter {letter.id}", session, Safe(""), error=True,
                         flash=f"Not replayed: the bus refused it ({exc}).", status=503)
        log.info("dashboard replayed dead letter %d on %s as seq %d",
                 letter.id, letter.subject, seq)
        raise see_other("/ui/deadletters?done=replayed")

    async def drop(self, request: web.Request, session: Session) -> web.StreamResponse:
        letter_id = parse_int(request.match_info["id"])
        if letter_id is not None and await self.store.drop_dead_letter(letter_id):
            log.info("dashboard dropped dead letter %d", letter_id)
        raise see_other("/ui/deadletters?done=dropped")
