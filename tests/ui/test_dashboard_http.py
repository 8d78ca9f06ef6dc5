"""The dashboard's guards over plain HTTP against a real backend: login, session cookie, CSRF,
revoked tokens, escaping, and the api process serving it too."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import ACCOUNT, ADMIN_TOKEN, CLUSTER_A, TOKENS, World
except ImportError:  # plain `pytest`
    from runtime.harness import (  # type: ignore[no-redef]
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        TOKENS,
        World,
    )

from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model.identity import Identity, TokenTable
from clustersync.runtime.services import api_site


async def logged_in(base: str, token: str = ADMIN_TOKEN) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{base}/ui/login", data={"token": token},
                         allow_redirects=False) as response:
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == "/ui/"
    return http


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def test_login_sets_a_strict_http_only_cookie_and_never_puts_the_token_in_a_url(
    world: World,
) -> None:
    base = world.backend.url
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/ui/login", data={"token": ADMIN_TOKEN}, allow_redirects=False
    ) as response:
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/ui" in cookie
        assert ADMIN_TOKEN not in cookie
        assert ADMIN_TOKEN not in response.headers["Location"]


@pytest.mark.parametrize("token", ["", "wrong", TOKENS[CLUSTER_A]])
async def test_login_refuses_unknown_and_agent_tokens(world: World, token: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        f"{world.backend.url}/ui/login", data={"token": token}, allow_redirects=False
    ) as response:
        assert response.status == 401
        assert "Set-Cookie" not in response.headers
        assert "not an admin token" in await response.text()


async def test_pages_need_a_session(world: World) -> None:
    base = world.backend.url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/ui/", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/ui/login"
        async with http.get(f"{base}/ui/fleet.json") as response:
            assert response.status == 401
        async with http.get(f"{base}/ui/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                            allow_redirects=False) as response:
            assert response.status == 303  # the dashboard takes sessions, not bearer headers


async def test_state_changing_forms_need_the_session_csrf_token(world: World) -> None:
    base = world.backend.url
    letter = await world.store.park("cs.dead.test", b"{}", "parked by the test")
    http = await logged_in(base)
    try:
        for data in ({}, {"csrf": "forged"}):
            async with http.post(f"{base}/ui/deadletters/{letter}/drop", data=data,
                                 allow_redirects=False) as response:
                assert response.status == 403
        assert await world.store.dead_letter(letter) is not None  # still there
        async with http.get(f"{base}/ui/deadletters/{letter}") as response:
            token = csrf_of(await response.text())
        async with http.post(f"{base}/ui/deadletters/{letter}/drop", data={"csrf": token},
                             allow_redirects=False) as response:
            assert response.status == 303
        assert await world.store.dead_letter(letter) is None
    finally:
        await http.close()


async def test_a_revoked_token_ends_its_sessions(world: World) -> None:
    base = world.backend.url
    http = await logged_in(base)
    try:
        async with http.get(f"{base}/ui/fleet.json") as response:
            assert response.status == 200
        del world.backend.server.tokens.tokens[ADMIN_TOKEN]  # the same table the UI reads
        async with http.get(f"{base}/ui/fleet.json") as response:
            assert response.status == 401
    finally:
        await http.close()


async def test_logout_forgets_the_session(world: World) -> None:
    base = world.backend.url
    http = await logged_in(base)
    try:
        async with http.get(f"{base}/ui/") as response:
            token = csrf_of(await response.text())
        async with http.post(f"{base}/ui/logout", data={"csrf": token},
                             allow_redirects=False) as response:
            assert response.status == 303
        async with http.get(f"{base}/ui/fleet.json") as response:
            assert response.status == 401
    finally:
        await http.close()


async def test_names_are_escaped_and_scripts_limited_to_our_own(tmp_path: Path,
                                                                world: World) -> None:
    evil = '<img src=x onerror="alert(1)">'
    world.backend.server.tokens.tokens["evil-agent-token"] = Identity(ACCOUNT, evil)
    http = await logged_in(world.backend.url)
    try:
        async with http.get(f"{world.backend.url}/ui/") as response:
            page = await response.text()
            policy = response.headers["Content-Security-Policy"]
        assert evil not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        async with http.get(f"{world.backend.url}/ui/fleet.json") as response:
            clusters = {c["cluster"] for c in (await response.json())["clusters"]}
        assert evil in clusters  # JSON carries the name as data; app.js sets it as text
    finally:
        await http.close()


async def test_the_api_process_serves_the_dashboard_with_state_unknown(world: World) -> None:
    tokens = TokenTable({ADMIN_TOKEN: Identity(admin=True),
                         TOKENS[CLUSTER_A]: Identity(ACCOUNT, CLUSTER_A)})
    site = api_site(world.store, world.bus, tokens)
    base = await site.start()
    http = await logged_in(base)
    try:
        async with http.get(f"{base}/ui/fleet.json") as response:
            clusters = (await response.json())["clusters"]
        assert [(c["cluster"], c["state"]) for c in clusters] == [(CLUSTER_A, "unknown")]
    finally:
        await http.close()
        await site.stop()


async def test_a_store_outage_is_a_503_page_not_a_crash(world: World, tmp_path: Path) -> None:
    store = await open_sqlite(f"sqlite:///{tmp_path}/outage.db")
    site = api_site(store, world.bus, TokenTable({ADMIN_TOKEN: Identity(admin=True)}))
    base = await site.start()
    http = await logged_in(base)
    try:
        async with http.get(f"{base}/ui/fleet.json") as response:
            assert response.status == 200
        await store.close()  # from now on every query fails with StoreError
        async with http.get(f"{base}/ui/fleet.json") as response:
            assert response.status == 503
            assert "store is unavailable" in (await response.json())["error"]
        async with http.get(f"{base}/ui/deadletters") as response:
            assert response.status == 503
            assert "Reload the page" in await response.text()
    finally:
        await http.close()
        await site.stop()


def listed_names(page: str) -> list[str]:
    """The object names of a cluster page's object table, in order."""
    return re.findall(r'<a href="/ui/clusters/[^"]+/object\?[^"]*">([^<]+)</a>', page)


@pytest.mark.parametrize(("query", "expected"), [
    ({"labels": "app=web"}, ["web"]),
    ({"labels": "app!=web", "kind": "apps/v1/deployments"}, ["api"]),
    ({"labels": "run"}, ["toolbox"]),  # the key alone: present with any value
    ({"q": "FLAG"}, ["flags"]),  # name search ignores case
    ({"namespace": "kubescape", "kind": "/v1/configmaps"}, ["operator-config"]),
])
async def test_the_object_browser_filters(world: World, query: dict[str, str],
                                          expected: list[str]) -> None:
    await world.add_cluster(CLUSTER_A)  # the harness's seed: deployments web and api, ...
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    http = await logged_in(world.backend.url)
    try:
        async with http.get(f"{world.backend.url}/ui/clusters/{ACCOUNT}/{CLUSTER_A}",
                            params=query) as response:
            assert response.status == 200
            assert listed_names(await response.text()) == expected
        async with http.get(f"{world.backend.url}/ui/clusters/{ACCOUNT}/{CLUSTER_A}",
                            params={"kind": "no/such"}) as response:
            assert response.status == 400  # a bad kind is a clear error, not a crash
    finally:
        await http.close()
