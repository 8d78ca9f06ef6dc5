"""Operator sub-commands: query and write through the backend API, and maintain the database."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import aiohttp
import orjson
import yaml

from clustersync.cli.common import CommandError


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


async def _api(method: str, url: str, token: str, **kwargs: Any) -> Any:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.request(method, url, headers=_api_headers(token), **kwargs) as response,
        ):
            body = await response.read()
            if response.status >= 300:
                try:
                    reason = orjson.loads(body).get("error", "")
                except (orjson.JSONDecodeError, AttributeError):
                    # One line even when a proxy answers with an HTML page.
                    reason = " ".join(body[:200].decode(errors="replace").split())
                raise CommandError(f"backend answered HTTP {response.status}: {reason}")
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise CommandError(f"{url} answered with something other than JSON") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CommandError(
            f"cannot reach the backend at {url}: {exc or type(exc).__name__}"
        ) from None


async def cmd_objects(args: argparse.Namespace) -> None:
    params = {"full": "1" if args.output == "json" else "0"}
    for name in ("account", "cluster"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.kind:
        params["kind"] = str(args.kind)
    doc = await _api("GET", f"{args.backend.rstrip('/')}/api/v1/objects", args.token, params=params)
    items = doc.get("items", [])
    if args.output == "json":
        sys.stdout.write(orjson.dumps(items, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for item in items:
        where = f"{item['namespace']}/{item['name']}" if item["namespace"] else item["name"]
        print(f"{item['account']}/{item['cluster']}  {item['kind']}  {where}  {item['checksum']}")


def _load_objects(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as handle:
            docs = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
    except yaml.YAMLError as exc:
        raise CommandError(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}", 2) from None
    objects: list[Any] = []
    for doc in docs:
        if isinstance(doc, list):
            objects.extend(doc)
        elif isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            objects.extend(doc["items"] or [])
        else:
            objects.append(doc)
    if not objects or not all(isinstance(o, dict) for o in objects):
        raise CommandError(f"{path} holds no Kubernetes objects", 2)
    return objects


async def cmd_push(args: argparse.Namespace) -> None:
    for obj in _load_objects(args.file):
        body: dict[str, Any] = {"account": args.account, "cluster": args.cluster, "object": obj}
        if args.kind:
            body["kind"] = str(args.kind)
        doc = await _api(
            "POST", f"{args.backend.rstrip('/')}/api/v1/objects", args.token, json=body
        )
        name = (obj.get("metadata") or {}).get("name", "?")
        print(f"accepted {obj.get('kind', '?')} {name} (seq {doc.get('seq')})")


async def cmd_delete(args: argparse.Namespace) -> None:
    namespace, _, name = args.object.rpartition("/")
    params = {
        "account": args.account,
        "cluster": args.cluster,
        "kind": str(args.kind),
        "namespace": namespace,
        "name": name,
    }
    doc = await _api(
        "DELETE", f"{args.backend.rstrip('/')}/api/v1/objects", args.token, params=params
    )
    print(f"accepted delete of {args.kind} {args.object} (seq {doc.get('seq')})")
