"""Sub-commands that run a process until it is stopped (and the demo)."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys

from clustersync.adapters.kube import KubeError
from clustersync.adapters.metrics import AGENT, INGESTER
from clustersync.cli.common import CommandError, tune_gc
from clustersync.cli.logs import set_process_context
from clustersync.runtime.listener import ListenerLimits
from clustersync.runtime.supervisor import Supervisor

log = logging.getLogger("clustersync")


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    from clustersync.runtime.http import server_tls

    try:
        return server_tls(args.tls_cert, args.tls_key)
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot use the TLS certificate: {exc}", 2) from None


def _limits(args: argparse.Namespace) -> ListenerLimits:
    return ListenerLimits(header_timeout=args.header_timeout, max_connections=args.max_connections)


async def _serve(*supervisors: Supervisor) -> None:
    """Serve until stopped by a signal, or until a background task fails for good: then stop
    with exit status 1 rather than run on without it."""
    from clustersync.runtime.supervisor import wait_for_failure

    failure = await wait_for_failure(*supervisors)
    raise CommandError(f"stopping: {failure}", 1)


def _quiet_floods() -> None:
    # A flood of bad input must not become a flood of log lines (see adapters/logthrottle.py).
    from clustersync.adapters import logthrottle

    logthrottle.install()


async def cmd_sandbox(args: argparse.Namespace) -> None:
    from clustersync.sandbox import SandboxError, SeedError, run_sandbox

    try:
        await run_sandbox(args.port, args.kubeconfig, args.seed, host=args.host)
    except SeedError as exc:
        raise CommandError(str(exc), 2) from None
    except SandboxError as exc:  # a seed object the sandbox refuses: unknown kind, duplicate…
        raise CommandError(f"{args.seed}: {' '.join(str(exc).split())}", 2) from None


async def cmd_backend(args: argparse.Namespace) -> None:
    from clustersync.runtime.backend import Backend
    from clustersync.runtime.config import load_tokens
    from clustersync.runtime.engines import open_bus, open_store

    tokens = load_tokens(args.tokens)
    tune_gc()
    _quiet_floods()
    store = await open_store(args.db)
    bus = await open_bus(args.bus, version_floor=await store.highest_version())
    backend = Backend(
        bus,
        store,
        tokens,
        reconcile_interval=args.reconcile_interval,
        limits=_limits(args),
        message_rate=args.max_message_rate,
        message_burst=args.message_burst,
        replica=args.replica,
        fast_digests=False if args.kubescape_checksums else None,
    )
    host, port = args.listen
    try:
        await backend.start(host, port, _tls(args))
        print(f"clustersync backend serving on {backend.url} (db {args.db})", flush=True)
        await _serve(*backend.supervisors)
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
    tune_gc()
    _quiet_floods()
    bus = await open_bus(args.bus)
    server = SyncServer(
        bus,
        tokens,
        reconcile_interval=args.reconcile_interval,
        message_rate=args.max_message_rate,
        message_burst=args.message_burst,
        replica=args.replica,
        fast_digests=False if args.kubescape_checksums else None,
    )
    site = server_site(server, _limits(args))
    try:
        url = await site.start(args.listen[0], args.listen[1], _tls(args))
        print(f"clustersync server serving on {url} (bus {args.bus})", flush=True)
        await _serve(server.supervisor, site.supervisor)
    finally:
        await site.stop()
        await bus.close()


async def cmd_ingester(args: argparse.Namespace) -> None:
    from clustersync.runtime.engines import open_bus, open_store
    from clustersync.runtime.http import health_site
    from clustersync.runtime.ingester import Ingester

    tune_gc()
    _quiet_floods()
    store = await open_store(args.db)
    bus = await open_bus(args.bus)
    ingester = Ingester(bus, store)
    site = health_site(roles=[INGESTER])
    try:
        await ingester.start()
        url = await site.start(*args.health)
        print(f"clustersync ingester running (bus {args.bus}, health on {url})", flush=True)
        await _serve(ingester.supervisor, site.supervisor)
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
    _quiet_floods()
    store = await open_store(args.db)
    bus = await open_bus(args.bus)
    site = api_site(store, bus, tokens, _limits(args))
    try:
        url = await site.start(args.listen[0], args.listen[1], _tls(args))
        print(f"clustersync api serving on {url}", flush=True)
        await _serve(site.supervisor)
    finally:
        await site.stop()
        await bus.close()
        await store.close()


async def cmd_agent(args: argparse.Namespace) -> None:
    from clustersync.adapters.kube.lean import load_transport_only

    load_transport_only()  # before the client's import: 35 MB less in every agent
    from clustersync.adapters.kube.client import KubeClient
    from clustersync.runtime.agent import Agent
    from clustersync.runtime.config import load_agent_config
    from clustersync.runtime.http import health_site
    from clustersync.runtime.ingest import IngestEndpoint

    config = load_agent_config(args.config)
    set_process_context(account=config.account, cluster=config.cluster)
    if args.check:
        from clustersync.cli.agent_check import run_checks

        await run_checks(config, args.kubeconfig or config.kubeconfig)
        return
    tune_gc()
    _quiet_floods()
    kube = await KubeClient.connect(args.kubeconfig or config.kubeconfig)
    try:
        try:
            git_version = await kube.server_version()
        except KubeError as exc:
            raise CommandError(f"cannot reach the Kubernetes API: {exc}") from None
        agent = Agent(config, kube, git_version=git_version)
        site = health_site(ready=agent.ready, waiting=agent.waiting_for, roles=[AGENT])
        agent.dead_letters.add_routes(site.app)
        ingest = IngestEndpoint(config.ingest, agent.submit) if config.ingest else None
        try:
            if args.health:
                url = await site.start(*args.health)
                log.info("agent health and metrics on %s", url)
            if ingest is not None:
                try:
                    await ingest.start()
                except OSError as exc:
                    raise CommandError(f"cannot serve the HTTP ingest endpoint: {exc}") from None
            await agent.run()
        finally:
            if ingest is not None:
                await ingest.stop()
            await site.stop()
    finally:
        await kube.close()


async def cmd_demo(args: argparse.Namespace) -> None:
    from clustersync.runtime.demo import run_demo

    if not await run_demo(timeout=args.timeout, out=sys.stdout):
        raise CommandError("the backend and the cluster did not converge in time")
