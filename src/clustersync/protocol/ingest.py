"""kubescape's in-cluster HTTP ingest endpoint, as a decision without I/O.

kubescape's node-agent and operator POST objects the cluster API does not hold (runtime alerts,
network streams, node profiles, registry statuses) to the synchronizer in the cluster, at
``/apis/v1/<group>/<version>/<resource>``. :func:`ingest` maps one request to the message the
Go synchronizer sends for it, or to the refusal it answers with:

* the path, lowercased, is exactly ``/apis/v1/<group>/<version>/<resource>`` with all three
  parts non-empty (so the core group cannot be used, and a trailing slash is refused);
* ``POST`` means the ``copy`` strategy and sends a **PutObject** with the body unchanged;
  ``PUT`` means ``patch`` and sends a **PatchObject** whose patch is the whole body; the kind must
  be configured for that strategy;
* the body is a JSON object naming itself: ``apiVersion`` (lowercased; a single part is taken as
  the group with version ``v1``, a Go quirk kept for compatibility), ``kind`` holding the
  *plural resource* (lowercased, e.g. ``"kind": "runtimealerts"``), ``metadata.name`` and
  ``metadata.namespace`` (lowercased); they must name the kind of the path;
* the checksum is the body's ``kubescape.io/sync-checksum`` annotation, or empty: the body is not
  shaped or hashed, as kubescape sends it.

Where Go answers a body it cannot decode with 500, this answers 400: the caller sent bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from clustersync.model import Kind, KindError, ObjectRef
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.messages import PatchObject, PutObject, reply_meta

__all__ = ["PATH_PREFIX", "SYNC_CHECKSUM", "IngestRefusedError", "ingest", "strategy_of"]

PATH_PREFIX = "/apis/v1/"
SYNC_CHECKSUM = "kubescape.io/sync-checksum"
_METHOD_STRATEGY = {"POST": Strategy.COPY, "PUT": Strategy.PATCH}


@dataclass(frozen=True, slots=True)
class IngestRefusedError(Exception):
    """A request the endpoint refuses: the HTTP ``status``, a metric label, and the text."""

    status: int
    reason: str
    text: str

    def __str__(self) -> str:
        return self.text


def strategy_of(method: str) -> Strategy | None:
    return _METHOD_STRATEGY.get(method.upper())


def path_kind(path: str) -> Kind:
    """The kind a request path names; raises :class:`IngestRefusedError`."""
    lowered = path.lower()
    if not lowered.startswith(PATH_PREFIX):
        raise IngestRefusedError(404, "unknown_path", f"no such endpoint {path!r}")
    parts = lowered.split("/")
    if len(parts) != 6 or not all(parts[3:]):
        raise IngestRefusedError(
            400, "bad_path", f"path must read {PATH_PREFIX}<group>/<version>/<resource>"
        )
    try:
        return Kind(parts[3], parts[4], parts[5])
    except KindError as exc:
        raise IngestRefusedError(400, "bad_path", str(exc)) from None


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise IngestRefusedError(400, "bad_body", f"{what} must be a string")
    return value


def _body_ref(doc: Mapping[str, Any]) -> ObjectRef:
    api_version = _text(doc.get("apiVersion"), "apiVersion").lower()
    parts = api_version.split("/")
    if len(parts) == 1:
        group, version = parts[0], "v1"  # Go's quirk: "v1" reads as group "v1", version "v1"
    elif len(parts) == 2:
        group, version = parts
    else:
        raise IngestRefusedError(
            400, "bad_body", f"apiVersion {api_version!r} is not group/version"
        )
    resource = _text(doc.get("kind"), "kind").lower()
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise IngestRefusedError(400, "bad_body", "metadata must be an object")
    name = _text(meta.get("name"), "metadata.name").lower()
    namespace = _text(meta.get("namespace"), "metadata.namespace").lower()
    if not name:
        raise IngestRefusedError(400, "bad_body", "metadata.name is required")
    try:
        return ObjectRef(Kind(group, version, resource), namespace, name)
    except KindError as exc:
        raise IngestRefusedError(400, "bad_body", f"the body names no kind: {exc}") from None


def _checksum(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    value = annotations.get(SYNC_CHECKSUM) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else ""


def ingest(
    method: str, path: str, body: bytes, resources: Mapping[Kind, Strategy]
) -> PutObject | PatchObject:
    """The message for one request, or :class:`IngestRefusedError` with the status to answer."""
    strategy = strategy_of(method)
    kind = path_kind(path)
    if strategy is None:
        raise IngestRefusedError(405, "bad_method", f"{method} is not accepted: POST or PUT")
    if strategy not in resources.values():
        raise IngestRefusedError(405, "bad_method", f"no resources are configured for {method}")
    if resources.get(kind) is not strategy:
        raise IngestRefusedError(404, "unknown_kind", f"{kind} is not configured for {method}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestRefusedError(400, "bad_json", f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise IngestRefusedError(400, "bad_body", "body must be a JSON object")
    ref = _body_ref(doc)
    if ref.kind != kind:
        raise IngestRefusedError(
            400, "kind_mismatch", f"the body is a {ref.kind}, the path says {kind}"
        )
    meta = reply_meta(None)  # a local event: depth 1, a fresh msgId
    checksum = _checksum(doc)
    if strategy is Strategy.COPY:
        return PutObject(
            ref=ref, checksum=checksum, object=body, depth=meta.depth, msg_id=meta.msg_id
        )
    return PatchObject(ref=ref, checksum=checksum, patch=body, depth=meta.depth, msg_id=meta.msg_id)
