"""The kustomize layouts under deploy/: rendered by kubectl, valid for Kubernetes, and wired to the
real CLI, the real config loader, the agent's needs (RBAC), probes, requests and non-root pods."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from clustersync.cli.parser import build_parser
from clustersync.runtime.config import AgentConfig, parse_agent_config

from .manifests import DEPLOY, IMAGE_USER, containers, find, materialize, one, render
from .project import source_version

# Oldest Kubernetes release we claim to support, and the newest the schema package knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
LAYOUTS = ("agent", "backend", "examples/agent", "examples/backend")
READ_VERBS = ("get", "list", "watch")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {layout: render(layout) for layout in LAYOUTS}


def _parsed_args(container: dict[str, Any]) -> argparse.Namespace:
    assert "command" not in container, "the image's ENTRYPOINT is clustersync; pass args only"
    try:
        return build_parser().parse_args(container["args"])
    except SystemExit as exc:  # argparse reports on stderr and exits 2
        raise AssertionError(f"clustersync rejects {container['args']}") from exc


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_object_is_valid_for_kubernetes(rendered: dict[str, list[dict[str, Any]]],
                                              layout: str, version: str) -> None:
    assert rendered[layout], f"deploy/{layout} rendered nothing"
    for doc in rendered[layout]:
        # strict: unknown fields are errors, as `kubectl apply --validate=strict` makes them
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schemas_catch_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(one(rendered["agent"], "Deployment", "clustersync-agent"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {
        "httpGet": {"path": "/readyz", "port": "health"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


# ---------------------------------------------------------------- commands, files and probes


@pytest.mark.parametrize("layout", ["examples/agent", "examples/backend"])
def test_every_container_runs_a_command_the_cli_accepts(
    rendered: dict[str, list[dict[str, Any]]], layout: str,
) -> None:
    commands = {_parsed_args(c).command for _, c in containers(rendered[layout])}
    expected = {"examples/agent": {"agent"}, "examples/backend": {"server", "ingester", "api"}}
    assert commands == expected[layout]


@pytest.mark.parametrize("layout", ["examples/agent", "examples/backend"])
def test_probes_hit_healthz_and_readyz_on_the_port_the_process_serves(
    rendered: dict[str, list[dict[str, Any]]], layout: str,
) -> None:
    for _, container in containers(rendered[layout]):
        args = _parsed_args(container)
        served = args.health if args.command in ("agent", "ingester") else args.listen
        assert served is not None, f"{container['name']} serves no HTTP port"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{container['name']} {probe}"
            port = ports.get(get["port"], get["port"])
            assert port == served[1], f"{container['name']} {probe} probes {port}, serves {served}"
            assert get.get("scheme", "HTTP") == "HTTP"  # no --tls-cert in these manifests
        assert not args.__dict__.get("tls_cert")


@pytest.mark.parametrize("layout", ["examples/agent", "examples/backend"])
def test_files_named_on_the_command_line_come_from_mounted_volumes(
    rendered: dict[str, list[dict[str, Any]]], layout: str, tmp_path: Path,
) -> None:
    docs = rendered[layout]
    for index, (deployment, container) in enumerate(containers(docs)):
        pod = materialize(docs, deployment, container, tmp_path / str(index))
        args = _parsed_args(container)
        for option in ("config", "tokens"):
            value = getattr(args, option, None)
            if value is not None:
                assert pod.host(value).is_file(), f"{container['name']}: --{option} {value}"


def _agent_config(docs: list[dict[str, Any]], tmp_path: Path) -> tuple[AgentConfig, str]:
    """The agent's config as the real loader reads it inside the pod, and the mounted token."""
    deployment = one(docs, "Deployment", "clustersync-agent")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    pod = materialize(docs, deployment, container, tmp_path)
    doc = yaml.safe_load(pod.host(_parsed_args(container).config).read_text())
    token_file = doc["accessKeyFile"]
    doc["accessKeyFile"] = str(pod.host(token_file))
    return parse_agent_config(doc, "agent.yaml"), pod.host(token_file).read_text()


def test_the_agent_config_loads_and_takes_its_token_from_the_secret(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path,
) -> None:
    config, token = _agent_config(rendered["examples/agent"], tmp_path)
    assert config.access_key == token == "example-agent-token-of-my-cluster"
    assert config.kubeconfig is None  # in-cluster service account
    tokens = rendered["examples/backend"]
    table = yaml.safe_load(materialize(
        tokens, *next(containers(tokens)), tmp_path / "backend").host(
            "/etc/clustersync/tokens/tokens.yaml").read_text())
    assert {"token": config.access_key, "account": config.account,
            "cluster": config.cluster} in table, "the example token table knows the example agent"


def test_secrets_reach_processes_as_files_except_the_database_password(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for layout in ("examples/agent", "examples/backend"):
        docs = rendered[layout]
        as_files: set[str] = set()
        as_env: dict[str, str] = {}
        for deployment, container in containers(docs):
            volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
            for mount in container.get("volumeMounts", []):
                if "secret" in volumes[mount["name"]]:
                    as_files.add(volumes[mount["name"]]["secret"]["secretName"])
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    as_env[var["name"]] = ref["name"]
        # PostgreSQL's driver reads PGPASSWORD; a password file would need mode 0600, which a
        # Secret volume with fsGroup cannot give (docs/deploy.md).
        assert set(as_env) <= {"PGPASSWORD"}, layout
        assert as_files, f"{layout}: no Secret mounted as files"
        assert not as_files & set(as_env.values()), layout
        secrets = {s["metadata"]["name"] for s in find(docs, "Secret")}
        assert as_files | set(as_env.values()) == secrets, f"{layout}: a Secret nobody uses"


# ---------------------------------------------------------------- RBAC


def _granted(docs: list[dict[str, Any]], account: str, namespace: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) that ClusterRoles bound to the service account grant."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    roles = set()
    for binding in find(docs, "ClusterRoleBinding"):
        if subject in binding["subjects"]:
            roles.add(binding["roleRef"]["name"])
    assert roles, f"no ClusterRoleBinding for {namespace}/{account}"
    grants = set()
    for role in roles:
        for rule in one(docs, "ClusterRole", role)["rules"]:
            for values in (rule["apiGroups"], rule["resources"], rule["verbs"]):
                assert "*" not in values, f"wildcard in ClusterRole {role}: {rule}"
            grants |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"]
                       for v in rule["verbs"]}
    return grants


def test_agent_rbac_grants_exactly_what_its_kinds_and_write_policy_need(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path,
) -> None:
    docs = rendered["examples/agent"]
    config, _ = _agent_config(docs, tmp_path)
    deployment = one(docs, "Deployment", "clustersync-agent")
    granted = _granted(docs, deployment["spec"]["template"]["spec"]["serviceAccountName"],
                       deployment["metadata"]["namespace"])
    policy = config.write_policy
    writable = policy.kinds if policy.kinds is not None else {r.kind for r in config.resources}
    needed = {(r.kind.group, r.kind.resource, verb) for r in config.resources
              for verb in READ_VERBS}
    needed |= {(kind.group, kind.resource, str(verb)) for kind in writable for verb in policy.verbs}
    assert granted - needed == set(), "granted beyond the agent's configuration"
    assert needed - granted == set(), "the agent's configuration needs more than granted"
    assert policy.kinds, "the example agent writes a few kinds, not every synced one"


# ---------------------------------------------------------------- pods


@pytest.mark.parametrize("layout", ["examples/agent", "examples/backend"])
def test_pods_run_as_the_image_user_without_privileges(
    rendered: dict[str, list[dict[str, Any]]], layout: str,
) -> None:
    for deployment, container in containers(rendered[layout]):
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == IMAGE_USER
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False
        assert own["readOnlyRootFilesystem"] is True
        assert own["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("layout", ["examples/agent", "examples/backend"])
def test_containers_request_cpu_and_memory_and_cap_memory(
    rendered: dict[str, list[dict[str, Any]]], layout: str,
) -> None:
    for _, container in containers(rendered[layout]):
        resources = container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"}, container["name"]
        assert "memory" in resources["limits"], container["name"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_images_carry_the_package_version(rendered: dict[str, list[dict[str, Any]]],
                                          layout: str) -> None:
    images = {c["image"] for _, c in containers(rendered[layout])}
    assert images == {f"clustersync:{source_version()}"}


def test_one_agent_per_cluster(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = one(rendered["examples/agent"], "Deployment", "clustersync-agent")["spec"]
    assert (spec["replicas"], spec["strategy"]["type"]) == (1, "Recreate")


def test_backend_reaches_nats_and_postgres_through_external_services(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["examples/backend"]
    external = {s["metadata"]["name"]: s for s in find(docs, "Service")
                if s["spec"].get("type") == "ExternalName"}
    hosts = set()
    for _, container in containers(docs):
        args = _parsed_args(container)
        for url in (args.bus, getattr(args, "db", None)):
            if url:
                parts = urlsplit(url)
                hosts.add(parts.hostname)
                assert parts.password is None, "passwords stay out of the command line"
    assert hosts == {"nats", "postgres"}
    assert hosts <= set(external)


def test_services_route_to_the_pods_and_ports_that_serve(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["examples/backend"]
    for service in find(docs, "Service"):
        if service["spec"].get("type") == "ExternalName":
            continue
        targets = [d for d in find(docs, "Deployment") if service["spec"]["selector"].items()
                   <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, service["metadata"]["name"]
        names = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_no_helm_chart_is_left_to_drift() -> None:
    # docs/deploy.md: kustomize only, since helm cannot be installed and tested here.
    assert not (DEPLOY / "helm").exists()
