"""The server's end of the link: authenticating agents before the websocket upgrade."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from clustersync.adapters.metrics import bad_input
from clustersync.link.frames import MAX_FRAME
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.messages import ACK_PROTOCOL, CLUSTERSYNC_PROTOCOLS, DIGEST_PROTOCOL

REASON_HEADER = "X-Clustersync-Reason"
"""The refusal's reason, also in a header: websocket clients rarely read a refused body."""


def _refusal(reason: str) -> dict[str, Any]:
    return {"text": f"{reason}\n", "headers": {REASON_HEADER: reason}}


def authenticate_agent(request: web.Request, tokens: TokenTable) -> Identity:
    """The agent's identity from its key; raises 401 or 424 before any upgrade.

    The account always comes from the key; the account header kubescape sends must agree with
    it. A cluster key also fixes the cluster, and a cluster header must agree with it. An account
    key takes its cluster from ``X-API-CLUSTER``, as kubescape's server does: it can speak for
    any cluster of its account, never for another account.
    """
    if request.headers.get("X-SYNCHRONIZER-VERSION") == "invalid":
        bad_input("server", "client_version")
        raise web.HTTPFailedDependency(**_refusal("client version rejected"))
    identity = tokens.identify(request.headers.get("X-API-KEY"))
    if identity is None or identity.admin:
        bad_input("server", "bad_token")
        raise web.HTTPUnauthorized(**_refusal("missing or unknown access key"))
    account = request.headers.get("X-API-ACCOUNT")
    cluster = request.headers.get("X-API-CLUSTER")
    if account and account != identity.account:
        bad_input("server", "identity_mismatch")
        raise web.HTTPUnauthorized(**_refusal("account does not match the access key"))
    if not identity.account_wide:
        if cluster and cluster != identity.cluster:
            bad_input("server", "identity_mismatch")
            raise web.HTTPUnauthorized(**_refusal("cluster does not match the access key"))
        return identity
    try:
        return identity.for_cluster(cluster or "")
    except ValueError as exc:
        bad_input("server", "bad_cluster_header")
        raise web.HTTPUnauthorized(
            **_refusal(f"an account key needs a valid X-API-CLUSTER header: {exc}")
        ) from None


def offers_extensions(request: web.Request) -> bool:
    """Whether the client offered one of our subprotocols (our agents do)."""
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return any(part.strip() in CLUSTERSYNC_PROTOCOLS for part in offered.split(","))


async def accept(
    request: web.Request,
    heartbeat: float,
    *,
    extensions: bool = True,
    fast_digests: bool = True,
) -> web.WebSocketResponse:
    # Offered by our agents only; aiohttp selects the first the client offers that is in
    # ``protocols``. Without ``extensions`` the server answers like kubescape's, which never
    # selects a subprotocol; without ``fast_digests`` it never agrees to clustersync.v2.
    ours = extensions and offers_extensions(request)
    if not extensions:
        protocols: tuple[str, ...] = ()
    else:
        protocols = (DIGEST_PROTOCOL, ACK_PROTOCOL) if fast_digests else (ACK_PROTOCOL,)
    ws = web.WebSocketResponse(
        # Websocket pings only for our agents: kubescape's Go client (gobwas/ws) answers a ping
        # only between its handlers and may write the pong inside a data frame. Its peers get
        # application Ping events instead (runtime/server.py).
        heartbeat=heartbeat if ours else None,
        max_msg_size=MAX_FRAME,
        protocols=protocols,
        compress=extensions,  # kubescape's server has no permessage-deflate either
    )
    await ws.prepare(request)
    return ws
