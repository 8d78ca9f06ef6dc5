"""The agent's end of the link: dialing with kubescape's connect headers."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import aiohttp

from clustersync.link.frames import MAX_FRAME
from clustersync.link.server import REASON_HEADER
from clustersync.model.versions import AGENT_VERSION
from clustersync.protocol.messages import CLUSTERSYNC_PROTOCOLS
from clustersync.protocol.supersede import SUPERSEDED_CLOSE


class LinkError(RuntimeError):
    """A failed dial that is worth retrying."""


class PermanentLinkError(LinkError):
    """The server refused us for good: bad credentials (401) or client version (424)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class SupersededError(PermanentLinkError):
    """Another agent with the same identity keeps replacing this one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, SUPERSEDED_CLOSE)


DIAL_TIMEOUT = 15.0
"""Seconds for TCP connect, TLS and the websocket handshake together: a server that accepts
connections but never answers must not hold the agent for the HTTP client's 300 s default."""

_REASON_CHARS = 500  # of a refusal's reason, enough for a sentence


def _describe(exc: BaseException) -> str:
    """An exception as a log phrase; some aiohttp errors have an empty text."""
    return str(exc) or type(exc).__name__


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
    timeout: float = DIAL_TIMEOUT,
) -> aiohttp.ClientWebSocketResponse:
    """Open the websocket; ``heartbeat`` pings detect a dead peer within about 1.5 periods."""
    try:
        async with asyncio.timeout(timeout):
            return await session.ws_connect(
                url,
                ssl=tls,
                headers=creds.headers(),
                heartbeat=heartbeat,
                max_msg_size=MAX_FRAME,
                protocols=CLUSTERSYNC_PROTOCOLS,  # the server picks the first it knows
                # permessage-deflate with context takeover: repeated keys and kinds cost almost
                # nothing; a server that does not offer it (kubescape's) gets plain frames.
                compress=15 if compress else 0,
                timeout=aiohttp.ClientWSTimeout(ws_close=10.0),
            )
    except aiohttp.WSServerHandshakeError as exc:
        reason = _refusal_reason(exc)
        if exc.status in (401, 424):
            raise PermanentLinkError(
                f"server refused the agent: HTTP {exc.status}{reason}", exc.status
            ) from None
        failed = f"websocket handshake with {url} failed: HTTP {exc.status}{reason}"
        raise LinkError(failed) from None
    except TimeoutError:
        raise LinkError(
            f"no websocket handshake from {url} within {timeout:g}s (the server accepts "
            "connections but does not answer, or the network drops them)"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise LinkError(f"cannot reach {url}: {_describe(exc)}{_tls_hint(url, exc)}") from None


def _tls_hint(url: str, exc: BaseException) -> str:
    """Name a scheme that does not fit the port: the errors alone are cryptic."""
    text = str(exc).lower()
    if url.startswith("wss://") and ("wrong version number" in text or "record layer" in text):
        return " (wss:// but the server does not speak TLS there: a plain ws:// port?)"
    if url.startswith("ws://") and isinstance(exc, aiohttp.ServerDisconnectedError):
        return " (the server hung up at once: a wss:// (TLS) port?)"
    return ""


def stop_ping_frames(ws: aiohttp.ClientWebSocketResponse) -> None:
    """No more websocket ping frames on this connection: for a server that did not negotiate
    clustersync.v1 (kubescape's), whose Go websocket library answers pings only between its
    handlers. aiohttp has no public switch once connected, hence its private attributes."""
    ws._heartbeat = None
    ws._cancel_heartbeat()


def _refusal_reason(refused: aiohttp.WSServerHandshakeError) -> str:
    """The server's own words for a refused handshake (": " and the text), or "".

    Our server names the reason in a header, since aiohttp drops the body of a refused upgrade;
    from other servers only the status is known.
    """
    header = refused.headers.get(REASON_HEADER, "") if refused.headers else ""
    reason = " ".join(str(header).split())[:_REASON_CHARS]
    return f": {reason}" if reason else ""
