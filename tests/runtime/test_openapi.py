"""The REST API against its own OpenAPI document: every route, real answers from a real backend
(sandbox cluster, agent, SQLite store), each validated against the schema the document gives."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from openapi_spec_validator import validate

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import ACCOUNT, ADMIN_TOKEN, CLUSTER_A, TOKENS, World, configmap
    from tests.runtime.openapi_check import OpenApiChecker
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        TOKENS,
        World,
        configmap,
    )
    from openapi_check import OpenApiChecker  # type: ignore[no-redef]

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Client:
    """Requests to the backend; every answer is validated against the document."""

    def __init__(self, world: World, checker: OpenApiChecker) -> None:
        self.world = world
        self.checker = checker

    async def call(
        self,
        method: str,
        template: str,
        path: str | None = None,
        *,
        expect: int,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[bytes, str]:
        url = f"{self.world.backend.url}{path or template}"
        async with self.world.http.request(
            method, url, headers=ADMIN if headers is None else headers, **kwargs
        ) as response:
            body = await response.read()
            assert response.status == expect, f"{method} {url}: {response.status} {body!r}"
            media = response.content_type
            self.checker.check(method.lower(), template, response.status, media, body)
            return body, media

    async def json(self, method: str, template: str, path: str | None = None, *,
                   expect: int = 200, **kwargs: Any) -> Any:
        body, _ = await self.call(method, template, path, expect=expect, **kwargs)
        return orjson.loads(body)


@pytest.fixture
async def client(synced: World) -> Client:
    async with synced.http.get(f"{synced.backend.url}/api/v1/openapi.json") as response:
        assert response.status == 200
        doc = await response.json()
    return Client(synced, OpenApiChecker(doc))


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    validate(client.checker.doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert client.checker.doc["openapi"].startswith("3.1")


async def test_every_route_answers_as_documented(client: Client) -> None:
    cluster = f"/api/v1/clusters/{ACCOUNT}/{CLUSTER_A}"
    one = "/api/v1/clusters/{account}/{cluster}/objects/{kind}/{name}"
    links = await client.json("GET", "/", headers={})
    assert links["links"]["docs"] == "/api/v1/docs"
    index = await client.json("GET", "/api/v1", headers={})
    assert index["links"]["clusters"] == "/api/v1/clusters"
    await client.call("GET", "/api/v1/openapi.json", headers={}, expect=200)
    page, media = await client.call("GET", "/api/v1/docs", headers={}, expect=200)
    assert media == "text/html"
    for path in client.checker.doc["paths"]:
        assert path.encode() in page, f"the reference page does not show {path}"

    fleet = await client.json("GET", "/api/v1/clusters")
    assert [(c["account"], c["cluster"]) for c in fleet["items"]] == [
        (ACCOUNT, name) for name in sorted(TOKENS)
    ]
    await client.json("GET", "/api/v1/clusters", headers={}, expect=401)
    agent_token = {"Authorization": f"Bearer {TOKENS[CLUSTER_A]}"}
    await client.json("GET", "/api/v1/clusters", headers=agent_token, expect=403)
    status = await client.json("GET", "/api/v1/clusters/{account}/{cluster}", cluster)
    assert status["namedByToken"] is True
    await client.json("GET", "/api/v1/clusters/{account}/{cluster}",
                      f"/api/v1/clusters/{ACCOUNT}/nowhere", expect=404)

    objects = await client.json("GET", "/api/v1/objects", params={"limit": "2"})
    assert len(objects["items"]) == 2 and objects["continue"]
    await client.json("GET", "/api/v1/objects", params={"limit": "zero"}, expect=400)
    await client.json("GET", "/api/v1/objects", params={"kind": "confgmaps"}, expect=422)

    settings = f"{cluster}/objects/cm/settings"
    got = await client.json("GET", one, settings, params={"namespace": "shop"})
    assert got["object"]["data"] == {"currency": "EUR"}
    body, media = await client.call("GET", one, settings, params={"namespace": "shop"},
                                    headers={**ADMIN, "Accept": "application/yaml"}, expect=200)
    assert media == "application/yaml"
    assert yaml.safe_load(body)["data"] == {"currency": "EUR"}
    await client.json("GET", one, settings, expect=404)  # no namespace given: no such object
    await client.json("GET", one, settings, params={"namespace": "shop"},
                      headers={**ADMIN, "Accept": "text/csv"}, expect=406)
    await client.json("GET", one, f"{cluster}/objects/configmapz/settings", expect=422)

    new = {"account": ACCOUNT, "cluster": CLUSTER_A, "object": configmap("from-api")}
    accepted = await client.json("POST", "/api/v1/objects", json=new, expect=202)
    write = "/api/v1/writes/{id}"
    outcome = await client.json("GET", write, accepted["location"])
    assert outcome["id"] == accepted["id"] and outcome["verb"] == "put"
    await client.json("GET", write, "/api/v1/writes/no-such-write", expect=404)
    history = await client.json("GET", f"{one}/writes", f"{cluster}/objects/cm/from-api/writes",
                                params={"namespace": "shop"})
    assert [w["id"] for w in history["items"]] == [accepted["id"]]
    await client.json("GET", f"{one}/writes", f"{cluster}/objects/cm/from-api/writes",
                      params={"limit": "-1"}, expect=400)
    await client.json("POST", "/api/v1/objects", data=b"{not json", expect=400)
    gone = {"account": ACCOUNT, "cluster": CLUSTER_A, "kind": "/v1/configmaps",
            "namespace": "shop", "name": "from-api"}
    await client.json("DELETE", "/api/v1/objects", params=gone, expect=202)
    await client.json("DELETE", "/api/v1/objects", params={"account": ACCOUNT}, expect=400)

    for probe in ("/healthz", "/readyz", "/metrics"):
        await client.call("GET", probe, headers={}, expect=200)

    untested = client.checker.operations() - client.checker.checked
    assert not untested, f"documented but never exercised: {sorted(untested)}"


async def test_every_served_route_is_documented(client: Client) -> None:
    app = client.world.backend._site.app if client.world.backend._site else None
    assert app is not None
    documented = {path for _, path in client.checker.operations()}
    served = set()
    for resource in app.router.resources():
        path = resource.canonical
        if path == "/{path}":  # the websocket catch-all: agents may dial any path
            continue
        if path == "/ui" or path.startswith("/ui/"):  # the dashboard's pages, for browsers
            continue
        served.add(path.rstrip("/") or "/")
    assert served - documented == set()


async def test_unknown_paths_and_errors_are_problem_documents(client: Client) -> None:
    url = f"{client.world.backend.url}/no/such/thing"
    async with client.world.http.get(url) as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        problem = await response.json()
    assert "/no/such/thing" in problem["detail"] and problem["status"] == 404
    async with client.world.http.get(f"{client.world.backend.url}/api/v1/objects",
                                     headers=ADMIN, params={"kind": "confgmaps"}) as response:
        assert response.content_type == "application/problem+json"
        assert "did you mean 'configmaps'" in (await response.json())["detail"]


async def test_a_kubescape_style_websocket_on_root_still_reaches_the_server(
    client: Client,
) -> None:
    world = client.world
    headers = {"X-API-KEY": TOKENS[CLUSTER_A], "X-API-ACCOUNT": ACCOUNT,
               "X-API-CLUSTER": CLUSTER_A}
    async with world.http.ws_connect(f"{world.backend.ws_url}/", headers=headers) as ws:
        assert not ws.closed
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await world.http.ws_connect(f"{world.backend.ws_url}/", headers={})
    assert refused.value.status == 401  # the server's own answer, not the API's index


async def test_aiohttp_refusals_on_api_paths_are_problem_documents(client: Client) -> None:
    base = client.world.backend.url
    async with client.world.http.put(f"{base}/api/v1/objects", headers=ADMIN) as response:
        assert response.status == 405
        assert response.content_type == "application/problem+json"
        assert "POST" in response.headers["Allow"]
        doc = await response.json()
    assert doc["status"] == 405 and "PUT is not allowed on /api/v1/objects" in doc["detail"]
    async with client.world.http.post(f"{base}/api/v1/nothing-here", headers=ADMIN) as response:
        assert response.status in (404, 405)
        assert response.content_type == "application/problem+json"
