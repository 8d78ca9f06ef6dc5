"""CustomResourceDefinitions installed, changed and removed at run time, and object names
validated as the API server validates them."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client
from sandbox_helpers import WAIT, call, cm

from clustersync.sandbox import Sandbox

KUBECTL = shutil.which("kubectl")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

CRD_YAML = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}}
  versions:
{versions}
"""
V1 = """\
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
V2 = """\
  - name: v2
    served: true
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
WIDGET = """\
apiVersion: example.com/v1
kind: Widget
metadata: {name: gear, namespace: default}
spec: {size: 3}
"""


def crd(name: str = "widgets.example.com", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True}],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


async def kubectl(kubeconfig: Path, cache: Path, *args: str, ok: bool = True) -> str:
    assert KUBECTL is not None
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert (proc.returncode == 0) == ok, f"kubectl {' '.join(args)}: {err.decode()}"
    return (out if ok else err).decode()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (not on PATH)")
async def test_kubectl_installs_changes_and_removes_a_crd(
    kubeconfig: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    run = lambda *args, ok=True: kubectl(kubeconfig, tmp_path / "cache", *args, ok=ok)  # noqa: E731
    manifest, widget = tmp_path / "crd.yaml", tmp_path / "widget.yaml"
    manifest.write_text(CRD_YAML.format(versions=V1))
    widget.write_text(WIDGET)

    await run("get", "widgets", ok=False)  # not served before the CRD exists
    assert "created" in await run("apply", "-f", str(manifest))
    await run("wait", "--for", "condition=established", "crd/widgets.example.com")
    assert "created" in await run("apply", "-f", str(widget))
    listed = orjson.loads(await run("get", "wdg", "-n", "default", "-o", "json"))
    assert [w["spec"] for w in listed["items"]] == [{"size": 3}]

    manifest.write_text(CRD_YAML.format(versions=V1 + V2))  # serve a second version
    assert "configured" in await run("apply", "-f", str(manifest))
    served = orjson.loads(await run("get", "--raw", "/apis/example.com/v2"))
    assert "widgets" in [r["name"] for r in served["resources"]]

    assert "deleted" in await run("delete", "-f", str(manifest))
    await run("get", "widgets", ok=False)
    assert sandbox.registry.find("example.com", "v1", "widgets") is None


async def test_a_crd_is_served_at_once_and_its_watch_ends_with_it(
    api: client.ApiClient, sandbox: Sandbox
) -> None:
    status, created = await call(api, "POST", CRDS, body=crd())
    assert status == 201, created
    conditions = {c["type"]: c["status"] for c in created["status"]["conditions"]}
    assert conditions["Established"] == "True"
    status, group = await call(api, "GET", "/apis/example.com/v1")
    assert status == 200 and "widgets" in [r["name"] for r in group["resources"]]

    path = "/apis/example.com/v1/namespaces/default/widgets"
    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "gear"}}
    status, obj = await call(api, "POST", path, body=body)
    assert status == 201, obj
    since = obj["metadata"]["resourceVersion"]
    resp = await api.call_api(
        path, "GET", query_params=[("watch", "true"), ("resourceVersion", since)],
        header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
        _preload_content=False, _request_timeout=WAIT,
    )  # fmt: skip
    async with resp:
        status, _ = await call(api, "DELETE", f"{CRDS}/widgets.example.com")
        assert status == 200
        async with asyncio.timeout(WAIT):
            events = [orjson.loads(line) async for line in resp.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "gear")]
    status, _ = await call(api, "GET", path)
    assert status == 404


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"group": "nodots"}, "spec.group"),
        ({"scope": "Galaxy"}, "spec.scope"),
        ({"versions": [{"name": "v1", "served": True, "storage": False}]}, "spec.versions"),
        ({"names": {"plural": "Widgets", "kind": "Widget"}}, "spec.names.plural"),
    ],
)
async def test_an_unservable_crd_is_refused_with_its_field(
    api: client.ApiClient, spec: dict[str, Any], field: str
) -> None:
    status, body = await call(api, "POST", CRDS, body=crd(**spec))
    assert status == 422 and body["reason"] == "Invalid", body
    assert field in [c["field"] for c in body["details"]["causes"]]


async def test_a_crd_name_must_be_plural_dot_group(api: client.ApiClient) -> None:
    status, body = await call(api, "POST", CRDS, body=crd(name="gadgets.example.com"))
    assert status == 422 and "metadata.name" in body["message"]


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/api/v1/namespaces/default/configmaps", cm("BadName_!"), "ConfigMap"),
        ("/api/v1/namespaces/default/configmaps", cm("x" * 254), "ConfigMap"),
        ("/api/v1/namespaces", {"metadata": {"name": "has.dots"}}, "Namespace"),
        ("/api/v1/namespaces/default/services", {"metadata": {"name": "9lives"}}, "Service"),
    ],
)
async def test_invalid_object_names_are_refused_like_the_api_server(
    api: client.ApiClient, sandbox: Sandbox, path: str, body: dict[str, Any], kind: str
) -> None:
    name = body["metadata"]["name"]
    status, answer = await call(api, "POST", path, body=body)
    assert status == 422, answer
    assert answer["reason"] == "Invalid" and answer["details"]["kind"] == kind
    assert answer["message"].startswith(f'{kind} "{name}" is invalid: metadata.name: Invalid value')
    assert answer["details"]["causes"][0]["field"] == "metadata.name"


async def test_valid_names_of_every_rule_are_accepted(api: client.ApiClient) -> None:
    for path, body in [
        ("/api/v1/namespaces/default/configmaps", cm("a.b-c.9")),
        ("/api/v1/namespaces", {"metadata": {"name": "9-team"}}),
        ("/api/v1/namespaces/default/services", {"metadata": {"name": "web-1"}}),
    ]:
        status, answer = await call(api, "POST", path, body=body)
        assert status == 201, answer


async def test_a_protobuf_body_is_refused_with_415(api: client.ApiClient) -> None:
    status, body = await call(
        api, "POST", "/apis/apps/v1/namespaces/default/deployments",
        body=b"k8s\x00\n\x0fapps/v1", content_type="application/vnd.kubernetes.protobuf",
    )  # fmt: skip
    assert status == 415 and body["reason"] == "UnsupportedMediaType", body
    assert "not application/vnd.kubernetes.protobuf" in body["message"]
