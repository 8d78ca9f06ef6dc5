"""The ingester's side of the fleet status: it keeps, per cluster, the latest connection facts a
server replica reported (``link`` controls, see runtime/status_report.py) and the latest initial
sync progress the agent reported (``SyncProgress`` frames), in the store's cluster-state rows."""

from __future__ import annotations

import logging

import orjson

from clustersync.adapters.metrics import bad_input
from clustersync.adapters.store import Store
from clustersync.protocol.envelope import Envelope
from clustersync.protocol.messages import SyncProgress

log = logging.getLogger("clustersync.ingester")

_NUMBERS = ("connectedSince", "lastMessage", "reportedAt")  # sent as text, like every other fact


def link_document(env: Envelope) -> tuple[str, bytes]:
    """(connection id, the link facts as stored JSON) from a ``link`` control."""
    facts = dict(env.client)
    doc: dict[str, object] = {k: v for k, v in facts.items() if k not in _NUMBERS}
    doc["connected"] = facts.get("connected") == "true"
    for name in _NUMBERS:
        try:
            doc[name] = float(facts.get(name, ""))
        except ValueError:
            doc[name] = None
    return facts.get("connectionId", ""), orjson.dumps(doc)


async def record_link(store: Store, env: Envelope) -> None:
    connection_id, doc = link_document(env)
    if not connection_id:
        bad_input("ingester", "bad_link_report")
        log.warning("link report of %s/%s without a connection id", env.account, env.cluster)
        return
    # A connect replaces the row; later news must be about the connection the row holds, so a
    # replaced connection's late "alive" or "disconnect" changes nothing.
    news = dict(env.client).get("event") != "connect"
    if not await store.save_link(env.account, env.cluster, connection_id, doc, current=news):
        log.debug("stale link report of %s/%s ignored", env.account, env.cluster)


async def record_progress(store: Store, env: Envelope, report: SyncProgress) -> None:
    doc = {
        str(k.kind): {
            "listed": k.listed,
            "sent": k.sent,
            "acknowledged": k.acknowledged,
            "done": k.done,
        }
        for k in report.kinds
    }
    await store.save_progress(env.account, env.cluster, orjson.dumps(doc))
