"""Backend write outcomes: which messages are backend writes, and how an outcome may change.

A write accepted by the API is ``pending`` until the cluster's side says what became of it. Our
agent reports a final outcome (applied, refused, failed, not found); for a kubescape agent, which
cannot report, the server records ``sent`` once the write is on the agent's socket. The ingester
itself settles a write as ``superseded`` when a newer write to the same object was forwarded to
the cluster before it (a redelivery after a failed first attempt): carrying it out then would put
an older version back.
"""

from __future__ import annotations

from clustersync.protocol.messages import Message, ObjectDeleted, PutObject, WriteStatus

FINAL = frozenset(
    {
        WriteStatus.APPLIED,
        WriteStatus.REFUSED,
        WriteStatus.FAILED,
        WriteStatus.NOT_FOUND,
        WriteStatus.SUPERSEDED,
    }
)

MAX_REASON = 4096  # characters of an API server's message kept in an outcome


def write_id(msg: Message) -> str | None:
    """The id of a backend write, or None for any other message.

    Writes authored by the API travel with the write's id as MsgId at depth 0 on the bus, and at
    depth 1 once a server forwarded them (one level per hop, as kubescape's server does). Every
    reply in a chain is deeper (an agent's message reaches the ingester at depth 2 or more, its
    answer the agent at 3 or more), so a PutObject answering the agent's GetObject never counts.
    """
    if isinstance(msg, PutObject | ObjectDeleted) and msg.depth <= 1 and msg.msg_id:
        return msg.msg_id
    return None


def may_replace(current: WriteStatus, new: WriteStatus) -> bool:
    """Whether ``new`` may overwrite ``current``: outcomes only move forward, and the first final
    one stays (a redelivered write applied twice must not turn a refusal into a success)."""
    if current in FINAL:
        return False
    if current is WriteStatus.SENT:
        return new in FINAL
    return new is not WriteStatus.PENDING


def status_for_api_error(http_status: int) -> WriteStatus:
    """A Kubernetes API server's error as an outcome: it refused the write (validation, missing
    namespace, admission webhook, forbidden), or the write failed and might work later."""
    if 400 <= http_status < 500 and http_status not in (408, 409, 429):
        return WriteStatus.REFUSED
    return WriteStatus.FAILED


def short_reason(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
