"""Dashboard sessions: the operator's token kept on the server, a random id in the cookie.

The browser holds only an opaque session id (HttpOnly, SameSite=Strict), never the token, and the
token is looked up in the token table on every request, so a revoked token ends its sessions.
Sessions live in this process's memory: with several ``api`` replicas behind a balancer, route an
operator to one replica (sticky sessions) or expect to log in again after a switch.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "clustersync_session"
IDLE_TIMEOUT = 8 * 3600.0  # a working day without a request ends the session
MAX_SESSIONS = 10_000  # beyond, the least recently used session is forgotten


@dataclass
class Session:
    id: str
    token: str
    csrf: str  # echoed by every state-changing form; a cross-site page cannot read it
    last_used: float


class Sessions:
    def __init__(
        self,
        idle_timeout: float = IDLE_TIMEOUT,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, token: str) -> Session:
        session = Session(
            secrets.token_urlsafe(32), token, secrets.token_urlsafe(32), self._clock()
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def find(self, session_id: str | None) -> Session | None:
        """The live session with that id (its idle clock restarted), or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_used > self.idle_timeout:
            del self._sessions[session_id]
            return None
        session.last_used = now
        self._sessions.move_to_end(session_id)
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, submitted or "")
