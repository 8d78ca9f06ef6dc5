"""The ``clustersync`` command: one sub-command per process or operator action.

Every failure ends with a one-line ``clustersync: error: …`` on stderr and a non-zero exit:
2 for bad arguments or files, 1 for refused credentials, unreachable peers and failed checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp
import orjson
import yaml

from clustersync.adapters.bus import BusError
from clustersync.adapters.kube import KubeError
from clustersync.adapters.store import StoreError
from clustersync.link.client import LinkError
from clustersync.model import Kind, KindError

log = logging.getLogger("clustersync")


class CommandError(RuntimeError):
    """A failure to report in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def _kind(text: str) -> Kind:
    try:
        return Kind.parse(text)
    except KindError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tune_gc() -> None:
    # Long-running processes hold large caches: the default thresholds made JSON decoding of big
    # lists several times slower here (see docs/benchmarks.md).
    gc.set_threshold(50_000, 20, 100)


# ---------------------------------------------------------------- long-running processes


async def cmd_sandbox(args: argparse.Namespace) -> None:
    from clustersync.sandbox import SandboxError, SeedError, run_sandbox

    try:
        await run_sandbox(args.port, args.kubeconfig, args.seed, host=args.host)
    except SeedError as exc:
        raise CommandError(str(exc), 2) from None
    except SandboxError as exc:  # a seed object the sandbox refuses: unknown kind, duplicate…
        raise CommandError(f"{args.seed}: {' '.join(str(exc).split())}", 2) from None


async def _serve_forever() -> None:
    await asyncio.Event().wait()


async def cmd_backend(args: argparse.Namespace) -> None:
    from clustersync.runtime.backend import Backend
    from clustersync.runtime.config import load_tokens
    from clustersync.runtime.engines import open_bus, open_store

    tokens = load_tokens(args.tokens)
    _tune_gc()
    store = await open_store(args.db)
    bus = await open_bus(args.bus)
    backend = Backend(bus, store, tokens, reconcile_interval=args.reconcile_interval)
    host, port = args.listen
    try:
        await backend.start(host, port)
        print(f"clustersync backend serving on {backend.url} (db {args.db})", flush=True)
        await _serve_forever()
    finally:
        await backend.stop()
        await bus.close()
        await store.close()


async def cmd_server(args: argparse.Namespace) -> None:
    from clustersync.runtime.config import load_tokens
    from clustersync.runtime.engines import open_bus
    from clustersync.runtime.server import SyncServer
    from clustersync.runtime.services import server_site

    tokens = load_tokens(args.tokens)
    _tune_gc()
    bus = await open_bus(args.bus)
    site = server_site(SyncServer(bus, tokens, reconcile_interval=args.reconcile_interval))
    try:
        url = await site.start(*args.listen)
        print(f"clustersync server serving on {url} (bus {args.bus})", flush=True)
        await _serve_forever()
    finally:
        await site.stop()
        await bus.close()


async def cmd_ingester(args: argparse.Namespace) -> None:
    from clustersync.runtime.engines import open_bus, open_store
    from clustersync.runtime.ingester import Ingester
    from clustersync.runtime.services import health_site

    _tune_gc()
    store = await open_store(args.db)
    bus = await open_bus(args.bus)
    ingester = Ingester(bus, store)
    site = health_site()
    try:
        await ingester.start()
        url = await site.start(*args.health)
        print(f"clustersync ingester running (bus {args.bus}, health on {url})", flush=True)
        await _serve_forever()
    finally:
        await site.stop()
        await ingester.stop()
        await bus.close()
        await store.close()


async def cmd_api(args: argparse.Namespace) -> None:
    from clustersync.runtime.config import load_tokens
    from clustersync.runtime.engines import open_bus, open_store
    from clustersync.runtime.services import api_site

    tokens = load_tokens(args.tokens)
    store = await open_store(args.db)
    bus = await open_bus(args.bus)
    site = api_site(store, bus, tokens)
    try:
        url = await site.start(*args.listen)
        print(f"clustersync api serving on {url}", flush=True)
        await _serve_forever()
    finally:
        await site.stop()
        await bus.close()
        await store.close()


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


async def cmd_agent(args: argparse.Namespace) -> None:
    from clustersync.adapters.kube.client import KubeClient
    from clustersync.runtime.agent import Agent
    from clustersync.runtime.config import load_agent_config

    config = load_agent_config(args.config)
    _tune_gc()
    kube = await KubeClient.connect(args.kubeconfig or config.kubeconfig)
    try:
        try:
            git_version = await kube.server_version()
        except KubeError as exc:
            raise CommandError(f"cannot reach the Kubernetes API: {exc}") from None
        await Agent(config, kube, git_version=git_version).run()
    finally:
        await kube.close()


async def cmd_demo(args: argparse.Namespace) -> None:
    from clustersync.runtime.demo import run_demo

    if not await run_demo(timeout=args.timeout, out=sys.stdout):
        raise CommandError("the backend and the cluster did not converge in time")


# ---------------------------------------------------------------- operator tools


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


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clustersync", description=__doc__)
    parser.add_argument(
        "--log-level",
        help="DEBUG, INFO, WARNING or ERROR (default: INFO for servers, WARNING for tools)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("sandbox", help="serve a sandbox Kubernetes API")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--kubeconfig", required=True, help="where to write a kubeconfig for it")
    p.add_argument("--seed", help="YAML or JSON file of objects to load first")
    p.set_defaults(run=cmd_sandbox)

    p = commands.add_parser("backend", help="server, ingester and API in one process")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    p.add_argument("--db", default="sqlite:///clustersync.db")
    p.add_argument("--bus", default="memory", help="memory (embedded) or nats://HOST:PORT")
    p.add_argument("--tokens", required=True, help="YAML token table")
    p.add_argument("--reconcile-interval", type=float, default=600.0, metavar="SECONDS")
    p.set_defaults(run=cmd_backend)

    p = commands.add_parser("server", help="accept agents and bridge them to the bus")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    p.add_argument("--bus", required=True, help="nats://HOST:PORT (shared by every replica)")
    p.add_argument("--tokens", required=True, help="YAML token table")
    p.add_argument("--reconcile-interval", type=float, default=600.0, metavar="SECONDS")
    p.set_defaults(run=cmd_server)

    p = commands.add_parser("ingester", help="apply bus messages to the database")
    p.add_argument("--bus", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--health", type=_host_port, default=("127.0.0.1", 0), metavar="HOST:PORT")
    p.set_defaults(run=cmd_ingester)

    p = commands.add_parser("api", help="serve object queries and backend writes")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8081), metavar="HOST:PORT")
    p.add_argument("--bus", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--tokens", required=True)
    p.set_defaults(run=cmd_api)

    p = commands.add_parser("db", help="database maintenance")
    db = p.add_subparsers(dest="db_command", required=True)
    p = db.add_parser("migrate", help="create or upgrade the schema")
    p.add_argument("--db", required=True)
    p.set_defaults(run=cmd_db_migrate)

    p = commands.add_parser("dlq", help="inspect, replay or drop parked bus messages")
    p.add_argument("action", choices=("list", "show", "replay", "drop"))
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--db", required=True)
    p.add_argument("--bus", default="", help="needed by replay")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=cmd_dlq)

    p = commands.add_parser("agent", help="sync a cluster with a backend")
    p.add_argument("--config", required=True)
    p.add_argument("--kubeconfig", help="overrides the config's kubeconfig")
    p.set_defaults(run=cmd_agent)

    p = commands.add_parser("demo", help="run every flow end to end on embedded parts")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(run=cmd_demo)

    def backend_client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", required=True, help="backend URL, e.g. http://127.0.0.1:8080")
        p.add_argument("--token", required=True, help="admin token")

    p = commands.add_parser("objects", help="list what the backend holds")
    backend_client(p)
    p.add_argument("--account")
    p.add_argument("--cluster")
    p.add_argument("--kind", type=_kind, help="group/version/resource")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=cmd_objects)

    p = commands.add_parser("push", help="write objects into a cluster through the backend")
    p.add_argument("file")
    backend_client(p)
    p.add_argument("--account", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--kind", type=_kind, help="group/version/resource, if not guessable")
    p.set_defaults(run=cmd_push)

    p = commands.add_parser("delete", help="delete an object in a cluster through the backend")
    p.add_argument("kind", type=_kind, metavar="GROUP/VERSION/RESOURCE")
    p.add_argument("object", metavar="NAMESPACE/NAME")
    backend_client(p)
    p.add_argument("--account", required=True)
    p.add_argument("--cluster", required=True)
    p.set_defaults(run=cmd_delete)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _until_signalled(
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> None:
    """Run a command; SIGTERM and SIGINT cancel it, so its cleanup runs and the exit is clean.

    Signals the process was started with ignored (``nohup``, background jobs) stay ignored.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[int] = []

    def on_signal(signum: int) -> None:
        log.info("received signal %d; shutting down", signum)
        signalled.append(signum)
        task.cancel()

    installed: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            continue
        installed.append(signum)
    try:
        await run(args)
    except asyncio.CancelledError:
        if not signalled:
            raise
        task.uncancel()
    finally:
        for installed_signum in installed:
            loop.remove_signal_handler(installed_signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dlq" and args.action != "list" and args.id is None:
        parser.error(f"dlq {args.action} needs the id of a dead letter")
    if args.command == "dlq" and args.action == "replay" and not args.bus:
        parser.error("dlq replay needs --bus")
    quiet = args.command in ("demo", "objects", "push", "delete", "db", "dlq")
    _configure_logging(args.log_level or ("WARNING" if quiet else "INFO"))
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, None]] = args.run
    from clustersync.link.client import PermanentLinkError
    from clustersync.runtime.config import ConfigError

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_until_signalled(run, args))
    except CommandError as exc:
        print(f"clustersync: error: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"clustersync: error: {exc}", file=sys.stderr)
        return 2
    except PermanentLinkError as exc:
        print(f"clustersync: error: {exc}", file=sys.stderr)
        return 1
    except (StoreError, BusError, KubeError, LinkError, OSError) as exc:
        print(f"clustersync: error: {exc}", file=sys.stderr)
        return 1
    return 0
