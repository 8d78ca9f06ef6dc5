"""The argument parser: one sub-command per process or operator action."""

from __future__ import annotations

import argparse

from clustersync import __version__
from clustersync.cli.serve import (
    cmd_agent,
    cmd_api,
    cmd_backend,
    cmd_demo,
    cmd_ingester,
    cmd_sandbox,
    cmd_server,
)
from clustersync.cli.status import cmd_status
from clustersync.cli.tools import (
    cmd_db_migrate,
    cmd_delete,
    cmd_dlq,
    cmd_objects,
    cmd_push,
)
from clustersync.model import Kind, KindError


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


def tls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS/wss with this certificate chain")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number of at least 1")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def listener_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--header-timeout", type=_positive, default=10.0, metavar="SECONDS",
        help="close connections whose request head takes longer (default 10)",
    )
    p.add_argument(
        "--max-connections", type=_count, default=4096, metavar="N",
        help="open connections at most, lowered to fit the file limit (default 4096)",
    )


def agent_socket_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replica", default="", metavar="NAME",
        help="this replica's name on the bus (default: random); a stable name per replica "
        "(e.g. the pod name) avoids one takeover consumer per restart",
    )
    p.add_argument(
        "--max-message-rate", type=_rate, default=2000.0, metavar="PER_SECOND",
        help="messages a second one agent may sustain beyond its burst; 0: no limit",
    )
    p.add_argument(
        "--message-burst", type=_count, default=200_000, metavar="N",
        help="messages one agent connection may send at once (default 200000)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clustersync", description="Synchronise Kubernetes clusters with a central backend."
    )
    parser.add_argument(
        "--log-level",
        help="DEBUG, INFO, WARNING or ERROR (default: INFO for servers, WARNING for tools)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    p.add_argument(
        "--bus", default="memory",
        help="memory (embedded), nats://HOST:PORT or pulsar://HOST:PORT[?topic=...|?layout=split]",
    )
    p.add_argument("--tokens", required=True, help="YAML token table")
    p.add_argument("--reconcile-interval", type=float, default=600.0, metavar="SECONDS")
    tls_options(p)
    listener_options(p)
    agent_socket_options(p)
    p.set_defaults(run=cmd_backend)

    p = commands.add_parser("server", help="accept agents and bridge them to the bus")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    p.add_argument(
        "--bus", required=True,
        help="nats://HOST:PORT or pulsar://HOST:PORT[?topic=...] (shared by every replica)",
    )
    p.add_argument("--tokens", required=True, help="YAML token table")
    p.add_argument("--reconcile-interval", type=float, default=600.0, metavar="SECONDS")
    tls_options(p)
    listener_options(p)
    agent_socket_options(p)
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
    tls_options(p)
    listener_options(p)
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
    p.add_argument(
        "--health",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve /healthz, /readyz (connected and synced) and /metrics, e.g. 0.0.0.0:7888",
    )
    p.set_defaults(run=cmd_agent)

    p = commands.add_parser("demo", help="run every flow end to end on embedded parts")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(run=cmd_demo)

    def backend_client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", required=True, help="backend URL, e.g. http://127.0.0.1:8080")
        p.add_argument("--token", required=True, help="admin token")

    p = commands.add_parser(
        "status", help="which clusters are connected, how far their sync got (table or JSON)"
    )
    backend_client(p)
    p.add_argument(
        "--cluster", help="one cluster (NAME or ACCOUNT/NAME), with its kinds one per line"
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=cmd_status)

    p = commands.add_parser("objects", help="list what the backend holds")
    backend_client(p)
    p.add_argument("--account")
    p.add_argument("--cluster")
    p.add_argument("--kind", type=_kind, help="group/version/resource")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=cmd_objects)

    def wait_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--wait",
            action="store_true",
            help="wait for the cluster's outcome: exit 0 when applied, 1 when refused, failed or "
            "not found (with the reason)",
        )
        p.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="how long --wait waits (default: %(default)s)",
        )

    p = commands.add_parser(
        "push",
        help="write objects into a cluster through the backend",
        description="Exit status: 0 done, 1 refused or failed, 2 bad input.",
    )
    p.add_argument(
        "file", help="YAML or JSON file of one or more objects (one write each); - reads stdin"
    )
    backend_client(p)
    p.add_argument("--account", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--kind", type=_kind, help="group/version/resource, if not guessable")
    wait_options(p)
    p.set_defaults(run=cmd_push)

    p = commands.add_parser(
        "delete",
        help="delete an object in a cluster through the backend",
        description="Exit status: 0 done, 1 refused, failed or not found, 2 bad input.",
    )
    p.add_argument("kind", type=_kind, metavar="GROUP/VERSION/RESOURCE")
    p.add_argument("object", metavar="NAMESPACE/NAME", help="NAME alone for cluster-scoped kinds")
    backend_client(p)
    p.add_argument("--account", required=True)
    p.add_argument("--cluster", required=True)
    wait_options(p)
    p.set_defaults(run=cmd_delete)
    return parser
