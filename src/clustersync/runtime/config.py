"""Configuration files: the agent's YAML (or kubescape's config.json), and the token table.

Every loader raises :class:`ConfigError` with a one-line reason naming the file and the field.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from clustersync.model import Kind, KindError
from clustersync.model.identity import Identity, TokenTable
from clustersync.model.kind_names import KindCatalog
from clustersync.model.versions import AGENT_VERSION, is_agent_version
from clustersync.protocol.agent_types import Strategy, Verb, WritePolicy
from clustersync.protocol.shaping import NamespaceRules


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    kind: Kind
    strategy: Strategy


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """kubescape's ``httpEndpoint`` section: the agent's HTTP ingest endpoint."""

    port: int
    resources: tuple[ResourceSpec, ...]
    host: str = "0.0.0.0"  # in-cluster callers reach the pod's address
    max_body_bytes: int = 32 * 1024 * 1024  # twice that still fits a websocket frame
    read_timeout: float = 5.0  # kubescape's ReadTimeout: for the request head, then the body


@dataclass(frozen=True, slots=True)
class AgentConfig:
    server: str
    account: str
    cluster: str
    access_key: str
    resources: tuple[ResourceSpec, ...]
    rules: NamespaceRules = field(default_factory=NamespaceRules)
    kubeconfig: str | None = None
    write_policy: WritePolicy = field(default_factory=WritePolicy)
    coalesce_quiet: float = 1.0
    coalesce_max_wait: float = 5.0
    heartbeat: float = 20.0
    first_connect_timeout: float = 900.0
    ca_file: str | None = None  # PEM bundle to verify a wss:// server with a private CA
    compress: bool = True  # permessage-deflate, when the server supports it
    resync_interval: float = 600.0  # seconds between inventory comparisons with the backend
    version: str = AGENT_VERSION  # X-SYNCHRONIZER-VERSION: semver, or kubescape servers see "old"
    ingest: IngestConfig | None = None  # the HTTP ingest endpoint, when configured
    data_dir: str | None = None  # where the agent keeps its checksum file (fast restarts)


# Every key an agent configuration may hold, per section: anything else is a typo to report
# (a silently ignored ``excludeNamespace:`` would sync kube-system). kubescape's spellings
# (``serverUrl``, ``clusterName``) are accepted beside ours.
AGENT_KEYS = frozenset({
    "server", "serverUrl", "account", "cluster", "clusterName", "accessKey", "accessKeyFile",
    "namespace", "includeNamespaces", "excludeNamespaces", "kubeconfig", "resources", "writes",
    "coalesce", "heartbeat", "firstConnectTimeout", "caFile", "compress", "resyncInterval",
    "agentVersion", "httpEndpoint", "dataDir",
})  # fmt: skip
# kubescape's config.json: the backend's sections are read by its server, not by an agent.
KUBESCAPE_TOP_KEYS = frozenset({"inCluster", "httpEndpoint", "backend", "kubeconfig"})
SECTION_KEYS = {
    "resources": frozenset({"group", "version", "resource", "strategy"}),
    "writes": frozenset({"kinds", "namespaces", "verbs"}),
    "coalesce": frozenset({"quiet", "maxWait"}),
    "httpEndpoint": frozenset(
        {"serverPort", "resources", "host", "maxBodyBytes", "readTimeout"}
    ),
}
AGENT_SCHEMES = ("ws", "wss")


def check_keys(section: dict[str, Any], known: frozenset[str], where: str = "") -> None:
    """Refuse a key nobody reads, with the closest known key as a suggestion."""
    for key in section:
        if key in known:
            continue
        name = f"{where}.{key}" if where else str(key)
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown key {name!r}{hint}")


def _read_document(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"cannot read {path}: the file does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from None
    try:
        return yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None


def _yaml_error(path: str | Path, exc: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: not valid YAML/JSON: problem``, lines and columns from 1."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return f"{where}: not valid YAML/JSON: {detail}"


def server_url(value: str) -> str:
    """The agent's ``server``: a ws:// or wss:// URL with a host (and a valid port, if any)."""
    parts = urlsplit(value)
    if parts.scheme in ("http", "https"):
        suggestion = "ws" + value[4:]
        raise ConfigError(
            f"server {value!r}: agents connect with a websocket URL; did you mean {suggestion!r}?"
        )
    if parts.scheme not in AGENT_SCHEMES or not value.startswith(f"{parts.scheme}://"):
        raise ConfigError(
            f"server {value!r} needs a scheme: ws://HOST:PORT/ or wss://HOST/ (TLS)"
        )
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        raise ConfigError(f"server {value!r}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ConfigError(f"server {value!r} names no host")
    return value


def _names(value: Any, what: str) -> frozenset[str]:
    """A list of names, or kubescape's comma-separated string form."""
    if value is None or value == "":
        return frozenset()
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise ConfigError(f"{what} must be a list of names or a comma-separated string")


def _resources(value: Any) -> tuple[ResourceSpec, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError("resources must be a non-empty list")
    specs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"resources[{i}] must be a mapping")
        check_keys(item, SECTION_KEYS["resources"], f"resources[{i}]")
        try:
            kind = Kind(
                str(item.get("group") or ""),
                str(item.get("version") or ""),
                str(item.get("resource") or ""),
            )
            strategy = Strategy(str(item.get("strategy") or "copy"))
        except (KindError, ValueError) as exc:
            raise ConfigError(f"resources[{i}]: {exc}") from None
        specs.append(ResourceSpec(kind, strategy))
    return tuple(specs)


def _write_policy(value: Any, kinds: frozenset[Kind]) -> WritePolicy:
    if value is None:
        return WritePolicy()
    if not isinstance(value, dict):
        raise ConfigError("writes must be a mapping")
    check_keys(value, SECTION_KEYS["writes"], "writes")
    try:
        allowed = _write_kinds(value["kinds"], kinds) if "kinds" in value else None
        verbs = frozenset(Verb(v) for v in value["verbs"]) if "verbs" in value else frozenset(Verb)
    except (KindError, ValueError, TypeError) as exc:
        raise ConfigError(f"writes: {exc}") from None
    if allowed is not None and not allowed <= kinds:
        outside = ", ".join(sorted(str(k) for k in allowed - kinds))
        raise ConfigError(f"writes.kinds must be synced resources: {outside} is not synced")
    namespaces = _names(value["namespaces"], "writes.namespaces") if "namespaces" in value else None
    return WritePolicy(kinds=allowed, namespaces=namespaces, verbs=verbs)


def _write_kinds(value: Any, synced: frozenset[Kind]) -> frozenset[Kind]:
    """``writes.kinds`` as kubectl users write them (``configmaps``, ``cm``, ``deployments.apps``,
    ``/v1/configmaps``), resolved among the built-in kinds and those the agent syncs."""
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise TypeError("kinds must be a list of kind names")
    catalog = KindCatalog()
    for kind in synced:
        catalog.learn(kind)
    return frozenset(catalog.resolve(text).kind for text in value)


def _positive(section: dict[str, Any], key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _flag(section: dict[str, Any], key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _optional_path(section: dict[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a file path")
    if not Path(value).is_file():
        raise ConfigError(f"{key}: no such file {value}")
    return value


def _data_dir(section: dict[str, Any]) -> str | None:
    """A directory the agent may write (created if missing); checked when it starts."""
    value = section.get("dataDir")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError("dataDir must be a directory path")
    if Path(value).exists() and not Path(value).is_dir():
        raise ConfigError(f"dataDir: {value} exists and is not a directory")
    return value


def _agent_version(section: dict[str, Any]) -> str:
    value = section.get("agentVersion", AGENT_VERSION)
    if not isinstance(value, str) or not is_agent_version(value):
        # A kubescape server reads anything else as a version too old for reconciliation.
        raise ConfigError(f"agentVersion must be a semantic version like v1.2.3, got {value!r}")
    return value


def _number(section: dict[str, Any], key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{key} must be a non-negative number, got {value!r}")
    return float(value)


def _ingest(value: Any) -> IngestConfig | None:
    """kubescape's top-level ``httpEndpoint``: ``serverPort`` (a string in kubescape's config)
    and ``resources``; ours may also set ``host``, ``maxBodyBytes`` and ``readTimeout``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("httpEndpoint must be a mapping")
    check_keys(value, SECTION_KEYS["httpEndpoint"], "httpEndpoint")
    port = value.get("serverPort")
    try:
        number = int(port) if isinstance(port, int | str) and not isinstance(port, bool) else -1
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"httpEndpoint.serverPort must be a port number, got {port!r}")
    try:
        resources = _resources(value.get("resources"))
    except ConfigError as exc:
        raise ConfigError(f"httpEndpoint.{exc}") from None
    host = value.get("host", "0.0.0.0")
    if not isinstance(host, str) or not host:
        raise ConfigError("httpEndpoint.host must be a host name or address")
    try:
        max_body = _positive(value, "maxBodyBytes", 32 * 1024 * 1024)
        read_timeout = _positive(value, "readTimeout", 5.0)
    except ConfigError as exc:
        raise ConfigError(f"httpEndpoint.{exc}") from None
    if max_body > 32 * 1024 * 1024:
        raise ConfigError("httpEndpoint.maxBodyBytes: at most 32 MiB fits a websocket frame")
    return IngestConfig(
        port=number,
        resources=resources,
        host=host,
        max_body_bytes=int(max_body),
        read_timeout=read_timeout,
    )


def _access_key(section: dict[str, Any], source: str) -> Any:
    """The agent token, inline or from ``accessKeyFile`` (a mounted Secret: the config itself can
    then live in a ConfigMap)."""
    path = section.get("accessKeyFile")
    if path is None or path == "":
        return section.get("accessKey")
    if section.get("accessKey"):
        raise ConfigError(f"{source}: set accessKey or accessKeyFile, not both")
    if not isinstance(path, str):
        raise ConfigError(f"{source}: accessKeyFile must be a file path")
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: accessKeyFile: cannot read {path}: {exc}") from None
    if not key:
        raise ConfigError(f"{source}: accessKeyFile {path} is empty")
    return key


def parse_agent_config(doc: Any, source: str = "config") -> AgentConfig:
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    # kubescape's client config.json keeps these under "inCluster", with other key names.
    section = doc.get("inCluster", doc)
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: inCluster must be a mapping")
    try:
        if section is doc:
            check_keys(doc, AGENT_KEYS)
        else:
            check_keys(doc, KUBESCAPE_TOP_KEYS)
            check_keys(section, AGENT_KEYS, "inCluster")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    server = section.get("server") or section.get("serverUrl")
    cluster = section.get("cluster") or section.get("clusterName")
    values = {
        "server": server,
        "account": section.get("account"),
        "cluster": cluster,
        "accessKey": _access_key(section, source),
    }
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: {name} is required")
    try:
        server_url(str(server))
        resources = _resources(section.get("resources"))
        rules = NamespaceRules(
            operator_namespace=str(section.get("namespace") or ""),
            include=_names(section.get("includeNamespaces"), "includeNamespaces"),
            exclude=_names(section.get("excludeNamespaces"), "excludeNamespaces"),
        )
        coalesce = section.get("coalesce") or {}
        if not isinstance(coalesce, dict):
            raise ConfigError("coalesce must be a mapping")
        check_keys(coalesce, SECTION_KEYS["coalesce"], "coalesce")
        quiet = _number(coalesce, "quiet", 1.0)
        max_wait = _number(coalesce, "maxWait", 5.0)
        if max_wait < quiet:
            raise ConfigError("coalesce.maxWait must be at least coalesce.quiet")
        kubeconfig = section.get("kubeconfig") or doc.get("kubeconfig")
        return AgentConfig(
            server=str(server),
            account=str(values["account"]),
            cluster=str(cluster),
            access_key=str(values["accessKey"]),
            resources=resources,
            rules=rules,
            kubeconfig=str(kubeconfig) if kubeconfig else None,
            write_policy=_write_policy(section.get("writes"), frozenset(r.kind for r in resources)),
            coalesce_quiet=quiet,
            coalesce_max_wait=max_wait,
            heartbeat=_number(section, "heartbeat", 20.0),
            first_connect_timeout=_number(section, "firstConnectTimeout", 900.0),
            ca_file=_optional_path(section, "caFile"),
            compress=_flag(section, "compress", True),
            resync_interval=_positive(section, "resyncInterval", 600.0),
            version=_agent_version(section),
            ingest=_ingest(doc.get("httpEndpoint", section.get("httpEndpoint"))),
            data_dir=_data_dir(section),
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_agent_config(path: str | Path) -> AgentConfig:
    return parse_agent_config(_read_document(path), str(path))


# ---------------------------------------------------------------- tokens


def parse_tokens(doc: Any, source: str = "tokens") -> TokenTable:
    if isinstance(doc, dict) and "tokens" in doc:
        doc = doc["tokens"]
    if not isinstance(doc, list):
        raise ConfigError(f"{source}: expected a list of token entries")
    table: dict[str, Identity] = {}
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise ConfigError(f"{source}: entry {i} needs a string token")
        token = entry["token"]
        if len(token) < 8:
            raise ConfigError(f"{source}: entry {i}: token shorter than 8 characters")
        if token in table:
            raise ConfigError(f"{source}: entry {i}: duplicate token")
        if entry.get("role") == "admin":
            table[token] = Identity(admin=True)
        elif isinstance(entry.get("account"), str) and isinstance(entry.get("cluster"), str):
            if not entry["account"] or not entry["cluster"]:
                raise ConfigError(f"{source}: entry {i}: empty account or cluster")
            table[token] = Identity(entry["account"], entry["cluster"])
        elif isinstance(entry.get("account"), str) and "cluster" not in entry:
            # An account key, as kubescape issues them: the agent names its cluster when it
            # connects (X-API-CLUSTER), within this account only.
            if not entry["account"]:
                raise ConfigError(f"{source}: entry {i}: empty account")
            table[token] = Identity(entry["account"])
        else:
            raise ConfigError(
                f"{source}: entry {i} needs an account (and optionally a cluster), or role: admin"
            )
    return TokenTable(table)


def load_tokens(path: str | Path) -> TokenTable:
    return parse_tokens(_read_document(path), str(path))
