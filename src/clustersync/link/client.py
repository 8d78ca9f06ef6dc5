"""The agent's end of the link: dialing with kubescape's connect headers."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp

from clustersync.link.frames import MAX_FRAME
from clustersync.model.versions import AGENT_VERSION
from clustersync.protocol.messages import ACK_PROTOCOL


class LinkError(RuntimeError):
    """A failed dial that is worth retrying."""


class PermanentLinkError(LinkError):
    """The server refused us for good: bad credentials (401) or client version (424)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    account: str
    cluster: str
    synchronizer_version: str = AGENT_VERSION
    helm_version: str = ""
    git_version: str = ""
    cloud_provider: str = ""

    def headers(self) -> dict[str, str]:
        return {
            "X-API-KEY": self.access_key,
            "X-API-ACCOUNT": self.account,
            "X-API-CLUSTER": self.cluster,
            "X-HELM-VERSION": self.helm_version,
            "X-SYNCHRONIZER-VERSION": self.synchronizer_version,
            "X-GIT-VERSION": self.git_version,
            "X-CLOUD-PROVIDER": self.cloud_provider,
        }


def tls_context(ca_file: str | None) -> ssl.SSLContext | bool:
    """Verification for wss:// servers: the system's CAs, or a private CA's bundle."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


async def dial(
    session: aiohttp.ClientSession,
    url: str,
    creds: Credentials,
    heartbeat: float,
    *,
    tls: ssl.SSLContext | bool = True,
    compress: bool = True,
) -> aiohttp.ClientWebSocketResponse:
    """Open the websocket; ``heartbeat`` pings detect a dead peer within about 1.5 periods."""
    try:
        return await session.ws_connect(
            url,
            ssl=tls,
            headers=creds.headers(),
            heartbeat=heartbeat,
            max_msg_size=MAX_FRAME,
            protocols=(ACK_PROTOCOL,),
            # permessage-deflate with context takeover: repeated keys and kinds cost almost
            # nothing; a server that does not offer it (kubescape's) gets plain frames.
            compress=15 if compress else 0,
            timeout=aiohttp.ClientWSTimeout(ws_close=10.0),
        )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (401, 424):
            raise PermanentLinkError(
                f"server refused the agent: HTTP {exc.status}", exc.status
            ) from None
        raise LinkError(f"handshake failed: HTTP {exc.status}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise LinkError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
