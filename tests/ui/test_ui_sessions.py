"""Dashboard sessions: idle expiry and the bound on how many are kept."""

from __future__ import annotations

from clustersync.runtime.ui.sessions import Session, Sessions, csrf_ok


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_after_its_idle_timeout_and_use_restarts_the_clock() -> None:
    clock = Clock()
    sessions = Sessions(idle_timeout=60, clock=clock)
    session = sessions.open("token")
    clock.now += 59
    assert sessions.find(session.id) is session
    clock.now += 59  # 59 s after the last use, 118 s after login: still alive
    assert sessions.find(session.id) is session
    clock.now += 61
    assert sessions.find(session.id) is None
    assert len(sessions) == 0


def test_the_least_recently_used_session_goes_first_beyond_the_bound() -> None:
    sessions = Sessions(max_sessions=2, clock=Clock())
    first, second = sessions.open("a"), sessions.open("b")
    assert sessions.find(first.id) is first  # first is now the most recently used
    third = sessions.open("c")
    assert sessions.find(second.id) is None
    assert sessions.find(first.id) is first
    assert sessions.find(third.id) is third


def test_ids_and_csrf_tokens_are_unguessable_and_checked_exactly() -> None:
    sessions = Sessions(clock=Clock())
    a, b = sessions.open("t"), sessions.open("t")
    assert len({a.id, b.id, a.csrf, b.csrf}) == 4
    assert len(a.id) >= 40
    assert csrf_ok(a, a.csrf)
    assert not csrf_ok(a, b.csrf)
    assert not csrf_ok(a, "")
    assert not csrf_ok(a, None)
    assert not csrf_ok(Session("x", "t", "abc", 0.0), "abcd")
