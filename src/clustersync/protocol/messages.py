"""The messages agents and backends exchange.

The set and the integer event codes are kubescape's (reference section 2.4). ``depth`` counts the
replies in a chain and ``msg_id`` correlates them; both are copied through by :func:`reply_meta`.
Object, patch and base-object payloads stay as JSON bytes: they are hashed, stored and forwarded
far more often than they are inspected, so decoding them is left to whoever needs the fields.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from clustersync.model import Kind, ObjectRef

MAX_DEPTH = 8
"""Messages deeper than this are dropped: the only guard against endless reply chains."""

MAX_FRAME = 64 * 1024 * 1024
"""Largest frame either end accepts: big SBOMs reach tens of MB. An object that cannot fit is
skipped (and reported) by the agent, and a larger frame closes the connection with 1009."""


class Event(IntEnum):
    NEW_CHECKSUM = 0
    OBJECT_ADDED = 1  # deprecated by kubescape, never sent
    OBJECT_DELETED = 2
    OBJECT_MODIFIED = 3  # deprecated by kubescape, never sent
    GET_OBJECT = 4
    PATCH_OBJECT = 5
    PUT_OBJECT = 6
    PING = 7
    BATCH = 8
    ACK = 100  # our extension, used only when both ends negotiated it (see ACK_PROTOCOL)
    AGENT_INFO = 101  # our extension: the kinds the agent syncs (see AgentInfo)
    WRITE_OUTCOME = 102  # our extension: what became of a backend write (see WriteOutcome)
    SYNC_PROGRESS = 103  # our extension: how far the initial sync got (see SyncProgress)


BATCH_RECONCILIATION = "reconciliation"


def new_msg_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True, kw_only=True)
class NewChecksum:
    """ "I hold this object with this checksum": sent on add, on connect and in reconciliation."""

    ref: ObjectRef
    checksum: str
    resource_version: int = 0
    depth: int = 0
    msg_id: str = ""
    event = Event.NEW_CHECKSUM


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectDeleted:
    ref: ObjectRef
    resource_version: int = 0
    depth: int = 0
    msg_id: str = ""
    event = Event.OBJECT_DELETED


@dataclass(frozen=True, slots=True, kw_only=True)
class GetObject:
    """Asks for the peer's copy; ``base_object`` (backend to agent) is the base to patch against."""

    ref: ObjectRef
    base_object: bytes | None = None
    depth: int = 0
    msg_id: str = ""
    event = Event.GET_OBJECT


@dataclass(frozen=True, slots=True, kw_only=True)
class PatchObject:
    """An RFC 7386 merge patch; ``checksum`` is that of the result of applying it to the base."""

    ref: ObjectRef
    checksum: str
    patch: bytes
    depth: int = 0
    msg_id: str = ""
    event = Event.PATCH_OBJECT


@dataclass(frozen=True, slots=True, kw_only=True)
class PutObject:
    ref: ObjectRef
    checksum: str
    object: bytes
    depth: int = 0
    msg_id: str = ""
    event = Event.PUT_OBJECT


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    depth: int = 0
    msg_id: str = ""
    event = Event.PING


ObjectMessage = NewChecksum | ObjectDeleted | GetObject | PatchObject | PutObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """Several messages of one kind. With ``batch_type == "reconciliation"`` the backend sends its
    inventory of that kind as ``new_checksum`` items and the agent repairs every difference."""

    kind: Kind
    batch_type: str = ""
    new_checksum: tuple[NewChecksum, ...] = ()
    object_deleted: tuple[ObjectDeleted, ...] = ()
    get_object: tuple[GetObject, ...] = ()
    patch_object: tuple[PatchObject, ...] = ()
    put_object: tuple[PutObject, ...] = ()
    depth: int = 0
    msg_id: str = ""
    # Our extension (negotiated peers only, see protocol/inventory.py): an inventory request's
    # bucket digests, and the buckets an inventory answer covers (None: the whole kind).
    digests: tuple[str, ...] = ()
    covered: tuple[int, ...] | None = None
    event = Event.BATCH

    def unrolled(self) -> tuple[ObjectMessage, ...]:
        """The items in kubescape's handling order: get, verify, delete, patch, put."""
        return (
            *self.get_object,
            *self.new_checksum,
            *self.object_deleted,
            *self.patch_object,
            *self.put_object,
        )


Message = ObjectMessage | Ping | Batch

ACK_PROTOCOL = "clustersync.v1"
"""Websocket subprotocol by which our agent and server agree to acknowledge backend messages.
kubescape peers do not offer it, and keep the plain protocol."""

DIGEST_PROTOCOL = "clustersync.v2"
"""``clustersync.v1`` plus fast digests (protocol/digest.py) for every checksum the agent sends.
Our agent offers it before v1; a server that may agree selects it, an older one (or one whose
bus a Go backend also reads) selects v1, and the agent keeps kubescape's hash."""

CLUSTERSYNC_PROTOCOLS = (DIGEST_PROTOCOL, ACK_PROTOCOL)
"""Our subprotocols, most preferred first: each includes the extensions of the ones after it."""


def speaks_clustersync(protocol: str | None) -> bool:
    """Whether a negotiated subprotocol is one of ours (acks, inventories, reports)."""
    return protocol in CLUSTERSYNC_PROTOCOLS


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The agent has finished with these deliveries of this connection (handled or rejected).

    Only then does the server acknowledge them to the bus: a message lost with a dying
    connection is redelivered on the next one instead of vanishing (see protocol/delivery.py)."""

    ids: tuple[int, ...]
    depth: int = 0
    msg_id: str = ""
    event = Event.ACK


@dataclass(frozen=True, slots=True)
class SyncedKind:
    kind: Kind
    namespaced: bool | None  # None: not known (the resource is not served yet, e.g. a CRD)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInfo:
    """Sent by our agent on connect (``clustersync.v1`` only): the kinds it syncs, so that the
    backend can refuse at once a write the agent would refuse anyway."""

    kinds: tuple[SyncedKind, ...]
    depth: int = 0
    msg_id: str = ""
    event = Event.AGENT_INFO


class WriteStatus(StrEnum):
    PENDING = "pending"  # accepted by the API, no word from the cluster yet
    SENT = "sent"  # written to a kubescape agent's socket, which cannot report more
    APPLIED = "applied"
    REFUSED = "refused"  # by the agent's write policy or by the Kubernetes API server
    FAILED = "failed"  # the cluster could not be reached or answered with a server error
    NOT_FOUND = "not_found"  # a delete of an object the cluster does not have
    SUPERSEDED = "superseded"  # dropped: a newer backend write to the object went out first


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOutcome:
    """What became of a backend write (``clustersync.v1`` only). ``msg_id`` is the write's id:
    the MsgId of the backend's PutObject or ObjectDeleted."""

    ref: ObjectRef
    status: WriteStatus
    reason: str = ""
    depth: int = 0
    msg_id: str = ""
    event = Event.WRITE_OUTCOME


@dataclass(frozen=True, slots=True)
class KindProgress:
    """One kind's initial sync, as the agent counts it since it connected."""

    kind: Kind
    listed: int  # objects the informer listed
    sent: int  # object messages written to the link
    acknowledged: int  # objects the backend accounted for (its inventory answer covered them)
    done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncProgress:
    """Sent by our agent every few seconds during its initial sync, and once at the end
    (``clustersync.v1`` only), so the fleet status can show the sync's progress."""

    kinds: tuple[KindProgress, ...]
    depth: int = 0
    msg_id: str = ""
    event = Event.SYNC_PROGRESS


Report = AgentInfo | WriteOutcome | SyncProgress
"""Extension frames an agent sends about itself rather than about the cluster's objects."""

Frame = Message | Ack | Report
"""Anything that travels on the websocket."""


@dataclass(frozen=True, slots=True)
class ReplyMeta:
    depth: int = 1
    msg_id: str = field(default_factory=new_msg_id)


def reply_meta(to: Message | None) -> ReplyMeta:
    """Depth and correlation id for a message caused by ``to`` (or by a local event if None)."""
    if to is None:
        return ReplyMeta(1, new_msg_id())
    return ReplyMeta(to.depth + 1, to.msg_id or new_msg_id())
