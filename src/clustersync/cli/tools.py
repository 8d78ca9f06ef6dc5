"""Operator sub-commands: query and write through the backend API, and maintain the database."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import yaml

from clustersync.cli import listing
from clustersync.cli.common import CommandError
from clustersync.model import KindError
from clustersync.model.kind_names import BUILTIN, KindCatalog


async def cmd_db_migrate(args: argparse.Namespace) -> None:
    if args.db.startswith("sqlite:"):
        from clustersync.runtime.engines import open_store

        store = await open_store(args.db)  # SQLite migrates on open
        await store.close()
        print("sqlite schema is current")
        return
    if not args.db.startswith(("postgresql:", "postgres:")):
        raise CommandError(f"unsupported database URL {args.db!r}", 2)
    from clustersync.adapters.store.postgres import migrate

    applied = await migrate(args.db)
    print(f"applied migrations: {', '.join(applied)}" if applied else "schema is current")


async def cmd_dlq(args: argparse.Namespace) -> None:
    from clustersync.runtime.engines import open_bus, open_store
    from clustersync.runtime.services import replay_dead_letter

    store = await open_store(args.db)
    try:
        if args.action == "list":
            for parked in await store.dead_letters(args.limit):
                print(f"{parked.id}  {parked.subject}  {len(parked.data)} B  {parked.reason}")
            return
        letter = await store.dead_letter(args.id)
        if letter is None:
            raise CommandError(f"no dead letter with id {args.id}")
        if args.action == "show":
            print(f"id: {letter.id}\nsubject: {letter.subject}\nreason: {letter.reason}")
            print(f"parked_at: {letter.parked_at}\ndata: {letter.data.decode(errors='replace')}")
        elif args.action == "drop":
            await store.drop_dead_letter(letter.id)
            print(f"dropped {letter.id}")
        else:
            bus = await open_bus(args.bus)
            try:
                seq = await replay_dead_letter(store, bus, letter)
            finally:
                await bus.close()
            print(f"replayed {letter.id} on {letter.subject} as seq {seq}")
    finally:
        await store.close()


def _api_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _reason(body: bytes) -> str:
    """The problem document's detail (or the older ``error`` key), else the body on one line."""
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("detail") or doc.get("error"), str):
            return str(doc.get("detail") or doc.get("error"))
    except orjson.JSONDecodeError:
        pass
    # One line even when a proxy answers with an HTML page.
    return " ".join(body[:200].decode(errors="replace").split())


def _tls(args: argparse.Namespace) -> ssl.SSLContext | bool:
    """How to verify an https:// backend: the system's CAs, or ``--ca-file``'s bundle."""
    ca_file = getattr(args, "ca_file", None)
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"--ca-file {ca_file}: {exc.strerror or exc}", 2) from None


async def _api(
    method: str, url: str, token: str, tls: ssl.SSLContext | bool = True, **kwargs: Any
) -> Any:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.request(
                method, url, headers=_api_headers(token), ssl=tls, **kwargs
            ) as response,
        ):
            body = await response.read()
            if response.status >= 300:
                # 400 and 422: the request itself was bad, an unknown kind say (exit 2);
                # anything else is a refusal (exit 1).
                code = 2 if response.status in (400, 422) else 1
                raise CommandError(
                    f"backend answered HTTP {response.status}: {_reason(body)}", code
                )
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise CommandError(f"{url} answered with something other than JSON") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CommandError(
            f"cannot reach the backend at {url}: {exc or type(exc).__name__}"
        ) from None


def _listing_query(args: argparse.Namespace) -> dict[str, str]:
    """The API's query parameters for ``objects [KIND] [NAME] -n -l --account --cluster``."""
    what = list(args.what)
    kind = args.kind or (what.pop(0) if what else None)
    if len(what) > 1:
        raise CommandError(f"objects takes a kind and a name at most, got {args.what}", 2)
    if args.all_namespaces and args.namespace:
        raise CommandError("-A (every namespace) and -n NAMESPACE exclude each other", 2)
    params = {"full": "1" if args.output in ("json", "yaml") else "0"}
    optional = {
        "account": args.account, "cluster": args.cluster, "kind": kind,
        "name": what[0] if what else None, "namespace": args.namespace,
        "labelSelector": args.selector,
    }  # fmt: skip
    params.update({key: value for key, value in optional.items() if value})
    return params


async def cmd_objects(args: argparse.Namespace) -> None:
    params = _listing_query(args)
    url = f"{args.backend.rstrip('/')}/api/v1/objects"
    tls = _tls(args)
    items: list[dict[str, Any]] = []
    while True:  # every page: the API pages long lists with a continue token
        doc = await _api("GET", url, args.token, tls, params=params)
        items.extend(doc.get("items", []))
        if not doc.get("continue"):
            break
        params["continue"] = str(doc["continue"])
    if args.output in ("json", "yaml"):
        sys.stdout.write(listing.documents(items, args.output))
    elif not items:
        print("No objects found.", file=sys.stderr)  # stderr, as kubectl: stdout stays parseable
    elif args.output == "name":
        sys.stdout.write(listing.names(items))
    else:
        sys.stdout.write(listing.table(items, time.time(), wide=args.output == "wide"))


def _load_objects(path: str) -> list[dict[str, Any]]:
    """Every object in a YAML or JSON file (``-``: standard input): several documents, a list,
    or a ``kind: List`` each give one object per item."""
    where = "standard input" if path == "-" else path
    try:
        if path == "-":
            docs = [doc for doc in yaml.safe_load_all(sys.stdin) if doc is not None]
        else:
            with open(path) as handle:
                docs = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    except OSError as exc:
        raise CommandError(f"cannot read {where}: {exc.strerror or exc}", 2) from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{where} is not UTF-8 text: {exc.reason}", 2) from None
    except yaml.YAMLError as exc:
        raise CommandError(f"{where} is not YAML or JSON: {str(exc).splitlines()[0]}", 2) from None
    objects: list[Any] = []
    for doc in docs:
        if isinstance(doc, list):
            objects.extend(doc)
        elif isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            objects.extend(doc["items"] or [])
        else:
            objects.append(doc)
    if not objects or not all(isinstance(o, dict) for o in objects):
        raise CommandError(f"{where} holds no Kubernetes objects", 2)
    return objects


@dataclass
class _Write:
    """One write the tool asked for: what to call it, and its id once accepted."""

    what: str
    ident: str = ""
    error: CommandError | None = None


# Exit statuses by outcome: done, or the cluster did not take the write.
_DONE = {"applied": "applied", "sent": "sent (the cluster's agent cannot report more)"}
_NOT_DONE = ("refused", "failed", "not_found", "superseded")
POLL_INTERVAL = 0.2


async def _outcome(args: argparse.Namespace, write: _Write) -> dict[str, Any]:
    """Poll the write's outcome until it is no longer pending (or ``--timeout`` passes)."""
    url = f"{args.backend.rstrip('/')}/api/v1/writes/{write.ident}"
    try:
        async with asyncio.timeout(args.timeout):
            while True:
                doc: dict[str, Any] = await _api("GET", url, args.token, _tls(args))
                if doc.get("status") != "pending":
                    return doc
                await asyncio.sleep(POLL_INTERVAL)  # polling an HTTP API, not synchronising
    except TimeoutError:
        raise CommandError(
            f"{write.what}: still pending after {args.timeout:g}s (write {write.ident}); the "
            "cluster's agent may be offline",
        ) from None


async def _settle(args: argparse.Namespace, write: _Write) -> str:
    """The line to print for a write; raises CommandError if the cluster did not take it."""
    if not args.wait:
        return f"accepted {write.what} (write {write.ident})"
    doc = await _outcome(args, write)
    status = str(doc.get("status"))
    if status in _DONE:
        return f"{_DONE[status]} {write.what} (write {write.ident})"
    reason = doc.get("reason") or "no reason given"
    if status in _NOT_DONE:
        raise CommandError(f"{write.what}: {status.replace('_', ' ')}: {reason}")
    raise CommandError(f"{write.what}: unexpected outcome {status!r}")


async def _finish(args: argparse.Namespace, writes: list[_Write]) -> None:
    """Print what became of each write; one failure is the error, several are summed up.

    Exit status: 0 when every write was done, 2 if any was bad input, else 1."""

    async def settle(write: _Write) -> None:
        if write.error is None:
            try:
                print(await _settle(args, write))
            except CommandError as exc:
                write.error = exc

    await asyncio.gather(*(settle(w) for w in writes))
    failed = [w for w in writes if w.error is not None]
    if not failed:
        return
    code = max(w.error.code for w in failed if w.error is not None)
    if len(writes) == 1 and failed[0].error is not None:
        raise failed[0].error
    for write in failed:
        print(f"{write.error}", file=sys.stderr)
    raise CommandError(f"{len(failed)} of {len(writes)} writes were not done", code)


async def cmd_push(args: argparse.Namespace) -> None:
    tls = _tls(args)
    writes = []
    for loaded in _load_objects(args.file):
        obj = loaded
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        if meta and "namespace" not in meta and _builtin_namespaced(_kind_text(obj, args.kind)):
            meta = {**meta, "namespace": "default"}  # as kubectl apply puts it
            obj = {**obj, "metadata": meta}
        name = meta.get("name", "?")
        where = f"{meta['namespace']}/{name}" if meta.get("namespace") else name
        write = _Write(f"{obj.get('kind', '?')} {where}")
        body: dict[str, Any] = {"account": args.account, "cluster": args.cluster, "object": obj}
        if args.kind:
            body["kind"] = args.kind
        try:
            doc = await _api(
                "POST", f"{args.backend.rstrip('/')}/api/v1/objects", args.token, tls, json=body
            )
            write.ident = str(doc.get("id") or doc.get("msgId") or "")
        except CommandError as exc:
            write.error = CommandError(f"{write.what}: {exc}", exc.code)
        writes.append(write)
    await _finish(args, writes)


def _kind_text(obj: dict[str, Any], explicit: str | None) -> str:
    """The kind a pushed object names: ``--kind``, else its apiVersion and kind."""
    if explicit:
        return explicit
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    return f"{obj.get('kind', '')}.{version}.{group}" if group else f"{obj.get('kind', '')}"


def _builtin_namespaced(text: str) -> bool:
    """Whether ``text`` names a built-in namespaced kind. Other kinds (custom resources) are
    left to the backend, which knows their scope from the agent and says if one is missing."""
    try:
        info = KindCatalog().resolve(text)
    except KindError:
        return False
    return info in BUILTIN and info.namespaced  # not a triple the catalog merely took in


async def cmd_delete(args: argparse.Namespace) -> None:
    namespace, _, name = args.object.rpartition("/")
    if namespace and args.namespace and namespace != args.namespace:
        raise CommandError(f"{args.object} and -n {args.namespace} name two namespaces", 2)
    namespace = namespace or args.namespace or ""
    if not name:
        raise CommandError(f"{args.object!r} names no object", 2)
    if not namespace and _builtin_namespaced(args.kind):
        namespace = "default"  # as kubectl takes it; the API itself wants it said
    params = {"account": args.account, "cluster": args.cluster, "kind": args.kind, "name": name}
    if namespace:
        params["namespace"] = namespace
    write = _Write(f"delete of {args.kind} {args.object}")
    try:
        doc = await _api(
            "DELETE", f"{args.backend.rstrip('/')}/api/v1/objects", args.token, _tls(args),
            params=params,
        )
        write.ident = str(doc.get("id") or doc.get("msgId") or "")
    except CommandError as exc:
        write.error = CommandError(f"{write.what}: {exc}", exc.code)
    await _finish(args, [write])
