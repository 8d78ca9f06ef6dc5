"""The ``clustersync`` command: one sub-command per process or operator action.

Every failure ends with a one-line ``clustersync: error: …`` on stderr and a non-zero exit:
2 for bad arguments or files, 1 for refused credentials, unreachable peers and failed checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from clustersync.adapters.kube import KubeError
from clustersync.cli.common import CommandError
from clustersync.cli.logs import configure_logging
from clustersync.cli.parser import BACKEND_ENV, TOKEN_ENV, build_parser
from clustersync.link.client import LinkError, PermanentLinkError
from clustersync.runtime.config import ConfigError

__all__ = ["build_parser", "main"]

log = logging.getLogger("clustersync")


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
    if args.command in ("objects", "push", "delete", "status"):
        if not args.backend:
            parser.error(f"{args.command} needs --backend URL (or ${BACKEND_ENV})")
        if not args.token:
            parser.error(f"{args.command} needs --token (or ${TOKEN_ENV})")
    if args.command == "agent" and args.check and args.health:
        parser.error("agent --check runs the checks and exits: --health does not apply")
    quiet = args.command in ("demo", "objects", "push", "delete", "status", "db", "dlq")
    configure_logging(args.log_level or ("WARNING" if quiet else "INFO"), args.log_format)
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, None]] = args.run
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
    except _peer_errors() as exc:
        print(f"clustersync: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _peer_errors() -> tuple[type[BaseException], ...]:
    """Failures of a peer or resource that end a command with status 1. Imported here, when
    one is raised: an agent never loads the bus and store adapters (a tenth of a second of CPU
    at every start) just to name their errors."""
    from clustersync.adapters.bus import BusError
    from clustersync.adapters.store import StoreError

    return (StoreError, BusError, KubeError, LinkError, OSError)
