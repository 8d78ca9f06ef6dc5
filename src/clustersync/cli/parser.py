"""The argument parser: one sub-command per process or operator action."""

from __future__ import annotations

import argparse
import os

from clustersync import __version__
from clustersync.cli.logs import LOG_FORMATS
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

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TOKEN_ENV, BACKEND_ENV = "CLUSTERSYNC_TOKEN", "CLUSTERSYNC_BACKEND"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default after its help (unless the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def global_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before or after the sub-command; after it they override what was
    given before (SUPPRESS: an option not repeated keeps the top level's value)."""
    p.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS,
        default=None if top else argparse.SUPPRESS,
        help="DEBUG, INFO, WARNING or ERROR (default: INFO for servers, WARNING for tools)",
    )
    p.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text" if top else argparse.SUPPRESS,
        help="text, or json: one JSON object per line with msgId, account and cluster where "
        "known (default: text)",
    )


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    p = commands.add_parser(
        name, help=summary, description=description or summary, formatter_class=_Formatter
    )
    global_options(p, top=False)
    return p


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def tls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tls-cert", metavar="FILE", help="serve HTTPS/wss with this certificate chain (PEM)"
    )
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
        help="close connections whose request head takes longer",
    )
    p.add_argument(
        "--max-connections", type=_count, default=4096, metavar="N",
        help="open connections at most, lowered to fit the file limit",
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
        help="messages one agent connection may send at once",
    )
    p.add_argument(
        "--kubescape-checksums", action="store_true",
        help="never agree to fast digests (clustersync.v2) with our agents; implied for Pulsar "
        "in kubescape's layout, whose Go backends verify with kubescape's hash",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clustersync",
        description="Synchronise Kubernetes clusters with a central backend.",
        formatter_class=_Formatter,
    )
    global_options(parser, top=True)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = _command(commands, "sandbox", "serve a sandbox Kubernetes API")
    p.add_argument("--port", type=int, required=True, help="port to serve on (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on")
    p.add_argument("--kubeconfig", required=True, help="where to write a kubeconfig for it")
    p.add_argument("--seed", help="YAML or JSON file of objects to load first")
    p.set_defaults(run=cmd_sandbox)

    p = _command(commands, "backend", "server, ingester and API in one process")
    p.add_argument(
        "--listen", type=_host_port, default=("127.0.0.1", 8080), metavar="HOST:PORT",
        help="address for agents, the API and the dashboard (default: 127.0.0.1:8080)",
    )
    p.add_argument(
        "--db", default="sqlite:///clustersync.db",
        help="sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH or postgresql://...",
    )
    p.add_argument(
        "--bus", default="memory",
        help="memory (embedded), nats://HOST:PORT or pulsar://HOST:PORT[?topic=...|?layout=split]",
    )
    p.add_argument("--tokens", required=True, help="YAML token table")
    p.add_argument(
        "--reconcile-interval", type=float, default=600.0, metavar="SECONDS",
        help="how often connected agents compare their inventory with the backend",
    )
    tls_options(p)
    listener_options(p)
    agent_socket_options(p)
    p.set_defaults(run=cmd_backend)

    p = _command(commands, "server", "accept agents and bridge them to the bus")
    p.add_argument(
        "--listen", type=_host_port, default=("127.0.0.1", 8080), metavar="HOST:PORT",
        help="address for agents (default: 127.0.0.1:8080)",
    )
    p.add_argument(
        "--bus", required=True,
        help="nats://HOST:PORT or pulsar://HOST:PORT[?topic=...] (shared by every replica)",
    )
    p.add_argument("--tokens", required=True, help="YAML token table")
    p.add_argument(
        "--reconcile-interval", type=float, default=600.0, metavar="SECONDS",
        help="how often connected agents compare their inventory with the backend",
    )
    tls_options(p)
    listener_options(p)
    agent_socket_options(p)
    p.set_defaults(run=cmd_server)

    p = _command(commands, "ingester", "apply bus messages to the database")
    p.add_argument("--bus", required=True, help="nats://HOST:PORT or pulsar://HOST:PORT")
    p.add_argument("--db", required=True, help="sqlite:///PATH or postgresql://...")
    p.add_argument(
        "--health", type=_host_port, default=("127.0.0.1", 0), metavar="HOST:PORT",
        help="serve /healthz and /metrics here (default: 127.0.0.1, any free port)",
    )
    p.set_defaults(run=cmd_ingester)

    p = _command(commands, "api", "serve object queries and backend writes")
    p.add_argument(
        "--listen", type=_host_port, default=("127.0.0.1", 8081), metavar="HOST:PORT",
        help="address for the API and the dashboard (default: 127.0.0.1:8081)",
    )
    p.add_argument("--bus", required=True, help="nats://HOST:PORT or pulsar://HOST:PORT")
    p.add_argument("--db", required=True, help="sqlite:///PATH or postgresql://...")
    p.add_argument("--tokens", required=True, help="YAML token table (admin tokens)")
    tls_options(p)
    listener_options(p)
    p.set_defaults(run=cmd_api)

    p = _command(commands, "db", "database maintenance")
    db = p.add_subparsers(dest="db_command", required=True)
    p = db.add_parser("migrate", help="create or upgrade the schema", formatter_class=_Formatter)
    global_options(p, top=False)
    p.add_argument("--db", required=True, help="sqlite:///PATH or postgresql://...")
    p.set_defaults(run=cmd_db_migrate)

    p = _command(commands, "dlq", "inspect, replay or drop parked bus messages")
    p.add_argument("action", choices=("list", "show", "replay", "drop"), help="what to do")
    p.add_argument("id", nargs="?", type=int, help="the dead letter's id (show, replay, drop)")
    p.add_argument("--db", required=True, help="sqlite:///PATH or postgresql://...")
    p.add_argument("--bus", default="", help="needed by replay")
    p.add_argument("--limit", type=int, default=100, help="list at most this many")
    p.set_defaults(run=cmd_dlq)

    p = _command(commands, "agent", "sync a cluster with a backend")
    p.add_argument("--config", required=True, help="the agent's YAML (or kubescape config.json)")
    p.add_argument("--kubeconfig", help="overrides the config's kubeconfig")
    p.add_argument(
        "--health",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve /healthz, /readyz (connected and synced) and /metrics, e.g. 0.0.0.0:7888",
    )
    p.add_argument(
        "--check", action="store_true",
        help="check the configuration, the server (reachable, token accepted) and that every "
        "resource is listable, a line each; exit 0 all good, 1 a check failed, 2 bad config",
    )
    p.set_defaults(run=cmd_agent)

    p = _command(commands, "demo", "run every flow end to end on embedded parts")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for each flow to converge"
    )
    p.set_defaults(run=cmd_demo)

    def backend_client(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend", default=os.environ.get(BACKEND_ENV),
            help=f"backend URL, e.g. http://127.0.0.1:8080 (default: ${BACKEND_ENV})",
        )
        p.add_argument(
            "--token", default=os.environ.get(TOKEN_ENV),
            help=f"admin token (default: ${TOKEN_ENV}, which keeps it out of ps)",
        )
        p.add_argument(
            "--ca-file", metavar="FILE",
            help="PEM bundle to verify an https:// backend with a private CA (default: system CAs)",
        )

    p = _command(
        commands, "status", "which clusters are connected, how far their sync got (table or JSON)"
    )
    backend_client(p)
    p.add_argument(
        "--cluster", help="one cluster (NAME or ACCOUNT/NAME), with its kinds one per line"
    )
    p.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="how to print it"
    )
    p.set_defaults(run=cmd_status)

    p = _command(
        commands, "objects", "list what the backend holds, like kubectl get",
        description="Exit status: 0 listed (perhaps nothing), 1 refused or unreachable, 2 bad "
        "input (an unknown kind, say).",
    )
    p.add_argument(
        "what", nargs="*", metavar="[KIND] [NAME]",
        help="a kind as kubectl takes it (configmaps, cm, deployments.apps, apps/v1/deployments) "
        "and an object name",
    )
    backend_client(p)
    p.add_argument("--account", help="only this account")
    p.add_argument("--cluster", help="only this cluster")
    p.add_argument("--kind", help="the kind, as an option (then a lone argument is the name)")
    p.add_argument("-n", "--namespace", help="only this namespace")
    p.add_argument(
        "-A", "--all-namespaces", action="store_true",
        help="every namespace (what happens without -n too: the backend spans clusters)",
    )
    p.add_argument("-l", "--selector", help="label selector, e.g. app=web,tier!=db")
    p.add_argument(
        "-o", "--output", choices=("table", "wide", "json", "yaml", "name"), default="table",
        help="table; wide adds the checksum and resourceVersion; json and yaml hold the objects",
    )
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

    p = _command(
        commands,
        "push",
        "write objects into a cluster through the backend",
        description="Exit status: 0 done, 1 refused or failed, 2 bad input.",
    )
    p.add_argument(
        "file", help="YAML or JSON file of one or more objects (one write each); - reads stdin"
    )
    backend_client(p)
    p.add_argument("--account", required=True, help="the cluster's account")
    p.add_argument("--cluster", required=True, help="the cluster to write into")
    p.add_argument(
        "--kind", help="the kind (configmaps, deployments.apps, ...), if apiVersion and kind "
        "do not say it"
    )
    wait_options(p)
    p.set_defaults(run=cmd_push)

    p = _command(
        commands,
        "delete",
        "delete an object in a cluster through the backend",
        description="Exit status: 0 done, 1 refused, failed or not found, 2 bad input.",
    )
    p.add_argument(
        "kind", metavar="KIND",
        help="a kind as kubectl takes it: configmaps, cm, deployments.apps, /v1/configmaps",
    )
    p.add_argument(
        "object", metavar="[NAMESPACE/]NAME",
        help="the object; a namespaced kind without a namespace (and no -n) means 'default'",
    )
    p.add_argument("-n", "--namespace", help="the object's namespace")
    backend_client(p)
    p.add_argument("--account", required=True, help="the cluster's account")
    p.add_argument("--cluster", required=True, help="the cluster to delete in")
    wait_options(p)
    p.set_defaults(run=cmd_delete)
    return parser
