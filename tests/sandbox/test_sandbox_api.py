"""Discovery, auth and CRUD semantics over HTTP via kubernetes_asyncio."""

from __future__ import annotations

import re
import ssl

import aiohttp
import orjson
import pytest
from kubernetes_asyncio import client
from sandbox_helpers import call, cm

from clustersync.sandbox import Sandbox

pytestmark = pytest.mark.asyncio

CM_PATH = "/api/v1/namespaces/default/configmaps"
AP_PATH = "/apis/spdx.softwarecomposition.kubescape.io/v1beta1"


async def test_discovery(api: client.ApiClient) -> None:
    status, version = await call(api, "GET", "/version")
    assert status == 200
    assert version["gitVersion"] == "v1.30.0-sandbox"
    assert (version["major"], version["minor"]) == ("1", "30")

    _, core = await call(api, "GET", "/api")
    assert core["kind"] == "APIVersions" and core["versions"] == ["v1"]

    _, groups = await call(api, "GET", "/apis")
    names = {g["name"]: g for g in groups["groups"]}
    assert names["apps"]["preferredVersion"]["groupVersion"] == "apps/v1"
    assert "spdx.softwarecomposition.kubescape.io" in names
    assert names["kubescape.io"]["versions"][0]["version"] == "v1alpha1"

    _, v1 = await call(api, "GET", "/api/v1")
    res = {r["name"]: r for r in v1["resources"]}
    assert v1["kind"] == "APIResourceList" and v1["groupVersion"] == "v1"
    assert res["pods"]["namespaced"] is True and res["pods"]["shortNames"] == ["po"]
    assert res["pods"]["singularName"] == "pod" and "watch" in res["pods"]["verbs"]
    assert res["nodes"]["namespaced"] is False

    _, spdx = await call(api, "GET", AP_PATH)
    kinds = {r["name"]: r["kind"] for r in spdx["resources"]}
    assert kinds["applicationprofiles"] == "ApplicationProfile"
    assert kinds["sbomsyfts"] == "SBOMSyft"

    status, body = await call(api, "GET", "/api/v1/nosuchthings")
    assert status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
    status, body = await call(api, "GET", "/totally/unknown")
    assert status == 404 and body["code"] == 404


async def test_auth_required(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(sandbox.url + "/api/v1/namespaces") as resp:
            assert resp.status == 401
            body = await resp.json()
            assert body["reason"] == "Unauthorized" and body["kind"] == "Status"
        headers = {"Authorization": "Bearer wrong"}
        async with session.get(sandbox.url + "/api", headers=headers) as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {sandbox.token}"}
        async with session.get(sandbox.url + "/api", headers=headers) as resp:
            assert resp.status == 200  # plain HTTP works on sandbox.url


async def test_https_on_same_port(sandbox: Sandbox) -> None:
    """The kubeconfig URL is https on the same port (kubectl needs TLS)."""
    assert sandbox.kubeconfig_url.startswith("https://")
    assert sandbox.ca_pem is not None
    ctx = ssl.create_default_context(cadata=sandbox.ca_pem.decode())
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    url = sandbox.kubeconfig_url + "/api"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=ctx) as resp,
    ):
        assert resp.status == 200


async def test_typed_client(api: client.ApiClient, sandbox: Sandbox) -> None:
    core = client.CoreV1Api(api)
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="typed", labels={"a": "b"}), data={"x": "1"}
    )
    created = await core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.metadata.resource_version
    listed = await core.list_namespaced_config_map("default", label_selector="a=b")
    assert [i.metadata.name for i in listed.items] == ["typed"]
    assert listed.metadata.resource_version == str(sandbox.resource_version)
    read = await core.read_namespaced_config_map("typed", "default")
    assert read.data == {"x": "1"}
    nss = await core.list_namespace()
    assert {n.metadata.name for n in nss.items} >= {"default", "kube-system", "kube-public"}
    with pytest.raises(client.ApiException) as err:
        await core.read_namespaced_config_map("missing", "default")
    assert err.value.status == 404


async def test_create_assigns_metadata(api: client.ApiClient, sandbox: Sandbox) -> None:
    before = sandbox.resource_version
    status, obj = await call(api, "POST", CM_PATH, body=cm("one"))
    assert status == 201
    meta = obj["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["generation"] == 1
    assert meta["resourceVersion"] == str(before + 1) == str(sandbox.resource_version)
    assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"

    status, err = await call(api, "POST", CM_PATH, body=cm("one"))
    assert status == 409 and err["reason"] == "AlreadyExists"
    assert err["details"]["name"] == "one"

    gen = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}
    status, obj = await call(api, "POST", CM_PATH, body=gen)
    assert status == 201 and re.fullmatch(r"gen-[a-z0-9]{5}", obj["metadata"]["name"])

    status, err = await call(
        api, "POST", "/api/v1/namespaces/nope/configmaps", body=cm("x", "nope")
    )
    assert status == 404 and err["reason"] == "NotFound"

    status, err = await call(api, "POST", CM_PATH, body=cm("x", "kube-system"))
    assert status == 400 and err["reason"] == "BadRequest"

    rv = sandbox.resource_version
    status, obj = await call(api, "POST", CM_PATH, body=cm("dry"), query=[("dryRun", "All")])
    assert status == 201 and obj["metadata"]["name"] == "dry"
    assert sandbox.get("", "v1", "configmaps", "default", "dry") is None
    assert sandbox.resource_version == rv


async def test_replace(api: client.ApiClient, sandbox: Sandbox) -> None:
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1},
    }
    path = "/apis/apps/v1/namespaces/default/deployments"
    _, created = await call(api, "POST", path, body=deploy)
    uid, ts = created["metadata"]["uid"], created["metadata"]["creationTimestamp"]
    old_rv = created["metadata"]["resourceVersion"]

    created["metadata"]["labels"] = {"tier": "front"}
    status, updated = await call(api, "PUT", f"{path}/web", body=created)
    assert status == 200
    assert updated["metadata"]["generation"] == 1  # no spec change
    assert int(updated["metadata"]["resourceVersion"]) > int(old_rv)
    assert (updated["metadata"]["uid"], updated["metadata"]["creationTimestamp"]) == (uid, ts)

    updated["spec"]["replicas"] = 3
    _, updated2 = await call(api, "PUT", f"{path}/web", body=updated)
    assert updated2["metadata"]["generation"] == 2

    stale = dict(updated2, metadata=dict(updated2["metadata"], resourceVersion=old_rv))
    status, err = await call(api, "PUT", f"{path}/web", body=stale)
    assert status == 409 and err["reason"] == "Conflict"

    no_rv = dict(updated2, metadata={"name": "web", "namespace": "default"})
    no_rv["spec"] = {"replicas": 5}
    status, forced = await call(api, "PUT", f"{path}/web", body=no_rv)
    assert status == 200 and forced["metadata"]["uid"] == uid

    missing = dict(deploy, metadata={"name": "ghost", "namespace": "default"})
    status, err = await call(api, "PUT", f"{path}/ghost", body=missing)
    assert status == 404 and err["reason"] == "NotFound"


async def test_patch_variants(api: client.ApiClient, sandbox: Sandbox) -> None:
    await call(api, "POST", CM_PATH, body=cm("p", a="1", b="2"))
    url = f"{CM_PATH}/p"
    merge = "application/merge-patch+json"

    status, obj = await call(
        api,
        "PATCH",
        url,
        body={"metadata": {"labels": {"a": None, "c": "3"}}},
        content_type=merge,
    )
    assert status == 200 and obj["metadata"]["labels"] == {"b": "2", "c": "3"}
    rv = obj["metadata"]["resourceVersion"]

    status, obj = await call(
        api,
        "PATCH",
        url,
        body={"data": {"k": "v2"}},
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200 and obj["data"] == {"k": "v2"}

    status, err = await call(
        api,
        "PATCH",
        url,
        body={"metadata": {"resourceVersion": rv}, "data": {"k": "x"}},
        content_type=merge,
    )
    assert status == 409 and err["reason"] == "Conflict"

    ops = [
        {"op": "add", "path": "/data/new", "value": "n"},
        {"op": "replace", "path": "/data/k", "value": "v3"},
        {"op": "remove", "path": "/metadata/labels/b"},
        {"op": "test", "path": "/data/new", "value": "n"},
    ]
    status, obj = await call(
        api, "PATCH", url, body=ops, content_type="application/json-patch+json"
    )
    assert status == 200
    assert obj["data"] == {"k": "v3", "new": "n"} and obj["metadata"]["labels"] == {"c": "3"}

    bad_test = [{"op": "test", "path": "/data/k", "value": "nope"}]
    status, err = await call(
        api, "PATCH", url, body=bad_test, content_type="application/json-patch+json"
    )
    assert status == 422 and err["reason"] == "Invalid"

    applied = cm("applied")
    status, obj = await call(
        api,
        "PATCH",
        f"{CM_PATH}/applied",
        body=applied,
        content_type="application/apply-patch+yaml",
        query=[("fieldManager", "test")],
    )
    assert status == 201 and obj["data"] == {"k": "applied"}
    applied["data"] = {"k": "again"}
    status, obj = await call(
        api,
        "PATCH",
        f"{CM_PATH}/applied",
        body=applied,
        content_type="application/apply-patch+yaml",
        query=[("fieldManager", "test")],
    )
    assert status == 200 and obj["data"] == {"k": "again"}

    status, err = await call(api, "PATCH", f"{CM_PATH}/nope", body={"a": 1}, content_type=merge)
    assert status == 404


async def test_noop_update_keeps_resource_version(api: client.ApiClient) -> None:
    _, obj = await call(api, "POST", CM_PATH, body=cm("same"))
    _, again = await call(api, "PUT", f"{CM_PATH}/same", body=obj)
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_delete(api: client.ApiClient, sandbox: Sandbox) -> None:
    await call(api, "POST", CM_PATH, body=cm("gone"))
    status, obj = await call(api, "DELETE", f"{CM_PATH}/gone")
    assert status == 200 and obj["metadata"]["name"] == "gone"
    assert obj["metadata"]["resourceVersion"] == str(sandbox.resource_version)
    status, err = await call(api, "DELETE", f"{CM_PATH}/gone")
    assert status == 404 and err["reason"] == "NotFound" and err["code"] == 404
    status, err = await call(api, "GET", f"{CM_PATH}/gone")
    assert status == 404


async def test_delete_namespace_cascades(api: client.ApiClient, sandbox: Sandbox) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    assert (await call(api, "POST", "/api/v1/namespaces", body=ns))[0] == 201
    for name in ("a", "b"):
        status, _ = await call(
            api, "POST", "/api/v1/namespaces/team/configmaps", body=cm(name, "team")
        )
        assert status == 201
    status, _ = await call(api, "DELETE", "/api/v1/namespaces/team")
    assert status == 200
    assert sandbox.list("", "v1", "configmaps", "team") == []
    assert sandbox.get("", "v1", "namespaces", "", "team") is None


async def test_cluster_scoped_nodes(api: client.ApiClient) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "x"}}
    status, obj = await call(api, "POST", "/api/v1/nodes", body=node)
    assert status == 201 and "namespace" not in obj["metadata"]
    status, obj = await call(api, "GET", "/api/v1/nodes/n1")
    assert status == 200 and obj["metadata"]["name"] == "n1"
    _, lst = await call(api, "GET", "/api/v1/nodes")
    assert lst["kind"] == "NodeList" and [n["metadata"]["name"] for n in lst["items"]] == ["n1"]
    status, _ = await call(api, "GET", "/api/v1/namespaces/default/nodes")
    assert status == 404
    status, _ = await call(api, "DELETE", "/api/v1/nodes/n1")
    assert status == 200


async def test_crd_application_profiles(api: client.ApiClient) -> None:
    path = f"{AP_PATH}/namespaces/default/applicationprofiles"
    prof = {
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "ApplicationProfile",
        "metadata": {"name": "replicaset-web-1", "namespace": "default"},
        "spec": {"containers": [{"name": "web", "syscalls": ["read"]}]},
    }
    status, obj = await call(api, "POST", path, body=prof)
    assert status == 201
    _, lst = await call(api, "GET", path)
    assert lst["kind"] == "ApplicationProfileList"
    assert lst["apiVersion"] == "spdx.softwarecomposition.kubescape.io/v1beta1"
    assert lst["items"][0]["spec"]["containers"][0]["syscalls"] == ["read"]
    _, all_ns = await call(api, "GET", f"{AP_PATH}/applicationprofiles")
    assert len(all_ns["items"]) == 1
    # Custom objects API also works against it.
    custom = client.CustomObjectsApi(api)
    got = await custom.get_namespaced_custom_object(
        "spdx.softwarecomposition.kubescape.io",
        "v1beta1",
        "default",
        "applicationprofiles",
        "replicaset-web-1",
    )
    assert got["metadata"]["uid"] == obj["metadata"]["uid"]


async def test_status_subresource(api: client.ApiClient) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    await call(api, "POST", "/api/v1/namespaces/default/pods", body=pod)
    status, obj = await call(
        api,
        "PATCH",
        "/api/v1/namespaces/default/pods/p/status",
        body={"status": {"phase": "Running"}, "spec": {"containers": []}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and obj["status"] == {"phase": "Running"}
    assert obj["spec"]["containers"][0]["name"] == "c"  # spec untouched via /status


async def test_bad_input(api: client.ApiClient, sandbox: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {sandbox.token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(sandbox.url + CM_PATH, data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.json())["reason"] == "BadRequest"
        async with session.post(sandbox.url + CM_PATH, data=b"") as resp:
            assert resp.status == 400
        async with session.post(sandbox.url + CM_PATH, data=b"[1, 2]") as resp:
            assert resp.status == 400
        async with session.put(sandbox.url + CM_PATH + "/x", data=b"\xff\xfe") as resp:
            assert resp.status == 400

    wrong_kind = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    status, err = await call(api, "POST", CM_PATH, body=wrong_kind)
    assert status == 400 and err["reason"] == "BadRequest"
    wrong_group = {"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "s"}}
    status, err = await call(api, "POST", CM_PATH, body=wrong_group)
    assert status == 400

    no_name = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": {"a": "b"}}}
    status, err = await call(api, "POST", CM_PATH, body=no_name)
    assert status == 422 and err["reason"] == "Invalid" and err["status"] == "Failure"

    status, err = await call(api, "GET", CM_PATH, query=[("labelSelector", "a in (b")])
    assert status == 400
    status, err = await call(api, "GET", CM_PATH, query=[("continue", "garbage!")])
    assert status == 400
    status, err = await call(api, "GET", CM_PATH, query=[("limit", "many")])
    assert status == 400
    await call(api, "POST", CM_PATH, body=cm("t"))
    headers["Content-Type"] = "text/plain"
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.patch(sandbox.url + CM_PATH + "/t", data=b"{}") as resp,
    ):
        assert resp.status == 415
    status, err = await call(
        api,
        "PATCH",
        f"{CM_PATH}/t",
        body=[{"op": "nope", "path": "/x"}],
        content_type="application/json-patch+json",
    )
    assert status == 422
    status, err = await call(api, "PUT", CM_PATH, body=cm("t"))
    assert status == 405 and err["reason"] == "MethodNotAllowed"
    # The server is still healthy after all of that.
    status, _ = await call(api, "GET", f"{CM_PATH}/t")
    assert status == 200
    assert orjson.loads(orjson.dumps(sandbox.list("", "v1", "configmaps")))


async def test_scale_subresource(api: client.ApiClient) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments"
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sc", "namespace": "default"},
        "spec": {"replicas": 1},
    }
    await call(api, "POST", path, body=deploy)
    status, scale = await call(api, "GET", f"{path}/sc/scale")
    assert status == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    status, scale = await call(
        api,
        "PATCH",
        f"{path}/sc/scale",
        body={"spec": {"replicas": 4}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and scale["spec"]["replicas"] == 4
    _, obj = await call(api, "GET", f"{path}/sc")
    assert obj["spec"]["replicas"] == 4 and obj["metadata"]["generation"] == 2
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 2}}
    status, err = await call(api, "PUT", f"{path}/sc/scale", body=stale)
    assert status == 409 and err["reason"] == "Conflict"
    status, _ = await call(api, "GET", "/api/v1/namespaces/default/configmaps/x/scale")
    assert status == 404


async def test_patch_answers_with_what_it_stored(api: client.ApiClient, sandbox: Sandbox) -> None:
    """A PATCH is one write: its answer is the stored object, a repeated patch writes nothing,
    a dry run stores nothing, and the live object never changes under a patch of its copy."""
    merge = "application/merge-patch+json"
    path = "/apis/apps/v1/namespaces/default/deployments"
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
        "spec": {"replicas": 1},
    }
    _, created = await call(api, "POST", path, body=deploy)
    status, patched = await call(
        api, "PATCH", f"{path}/web", body={"spec": {"replicas": 3}}, content_type=merge
    )
    assert status == 200
    assert patched["spec"] == {"replicas": 3}
    assert patched["metadata"]["generation"] == 2  # a spec change, though metadata was untouched
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert patched["metadata"]["labels"] == {"tier": "front"}
    _, got = await call(api, "GET", f"{path}/web")
    assert got == patched

    rv = sandbox.resource_version
    _, again = await call(
        api, "PATCH", f"{path}/web", body={"spec": {"replicas": 3}}, content_type=merge
    )
    assert again == patched and sandbox.resource_version == rv

    status, dry = await call(
        api, "PATCH", f"{path}/web", body={"spec": {"replicas": 9}}, content_type=merge,
        query=[("dryRun", "All")],
    )  # fmt: skip
    assert status == 200 and dry["spec"] == {"replicas": 9}
    _, got = await call(api, "GET", f"{path}/web")
    assert got == patched and sandbox.resource_version == rv

    ops = [{"op": "add", "path": "/metadata/labels/extra", "value": "x"}]
    status, labelled = await call(
        api, "PATCH", f"{path}/web", body=ops, content_type="application/json-patch+json"
    )
    assert status == 200 and labelled["metadata"]["labels"] == {"tier": "front", "extra": "x"}
    assert labelled["metadata"]["generation"] == 2  # labels are not spec
    _, got = await call(api, "GET", f"{path}/web")
    assert got == labelled
