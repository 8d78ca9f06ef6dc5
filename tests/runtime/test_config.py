"""Configuration files: the agent's YAML, kubescape's config.json, and the token table.

Every bad file must give a ConfigError whose message is one line naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clustersync.model import Kind
from clustersync.model.identity import Identity
from clustersync.protocol.agent_types import Strategy, Verb, WritePolicy
from clustersync.runtime.config import (
    AgentConfig,
    ConfigError,
    ResourceSpec,
    load_agent_config,
    load_tokens,
    parse_agent_config,
    parse_tokens,
)

CONFIGMAPS = Kind("", "v1", "configmaps")
DEPLOYMENTS = Kind("apps", "v1", "deployments")
PROFILES = Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "applicationprofiles")

FULL_YAML = """\
server: wss://backend.example.com/
account: acct-1
cluster: prod-eu
accessKey: s3cr3t-agent-key
namespace: kubescape
includeNamespaces: [shop, payments]
excludeNamespaces: [kube-system]
kubeconfig: /etc/clustersync/kubeconfig
heartbeat: 7.5
coalesce:
  quiet: 0.25
  maxWait: 2
resources:
  - {group: "", version: v1, resource: configmaps, strategy: copy}
  - {group: apps, version: v1, resource: deployments, strategy: patch}
  - group: spdx.softwarecomposition.kubescape.io
    version: v1beta1
    resource: applicationprofiles
writes:
  kinds: [/v1/configmaps]
  namespaces: "shop, payments"
  verbs: [create, update]
"""


def minimal(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "server": "ws://127.0.0.1:1/",
        "account": "acct",
        "cluster": "clus",
        "accessKey": "agent-key-123",
        "resources": [{"version": "v1", "resource": "configmaps"}],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def assert_one_line(exc: BaseException, *needles: str) -> str:
    text = str(exc)
    assert text and "\n" not in text, f"not one line: {text!r}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return text


# ---------------------------------------------------------------- agent YAML


def test_full_agent_yaml(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, "agent.yaml", FULL_YAML))
    assert isinstance(config, AgentConfig)
    assert config.server == "wss://backend.example.com/"
    assert (config.account, config.cluster) == ("acct-1", "prod-eu")
    assert config.access_key == "s3cr3t-agent-key"
    assert config.kubeconfig == "/etc/clustersync/kubeconfig"
    assert config.heartbeat == 7.5
    assert (config.coalesce_quiet, config.coalesce_max_wait) == (0.25, 2.0)
    assert config.resources == (
        ResourceSpec(CONFIGMAPS, Strategy.COPY),
        ResourceSpec(DEPLOYMENTS, Strategy.PATCH),
        ResourceSpec(PROFILES, Strategy.COPY),  # copy is the default strategy
    )
    assert config.rules.operator_namespace == "kubescape"
    assert config.rules.include == frozenset({"shop", "payments"})
    assert config.rules.exclude == frozenset({"kube-system"})
    assert config.write_policy == WritePolicy(
        kinds=frozenset({CONFIGMAPS}),
        namespaces=frozenset({"shop", "payments"}),
        verbs=frozenset({Verb.CREATE, Verb.UPDATE}),
    )


def test_defaults_of_a_minimal_config() -> None:
    config = parse_agent_config(minimal())
    assert config.kubeconfig is None
    assert config.rules.include == frozenset() and config.rules.exclude == frozenset()
    assert config.rules.operator_namespace == ""
    assert config.write_policy == WritePolicy()
    assert config.write_policy.verbs == frozenset(Verb)
    assert (config.coalesce_quiet, config.coalesce_max_wait) == (1.0, 5.0)
    assert config.resources == (ResourceSpec(CONFIGMAPS, Strategy.COPY),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a", "b"], {"a", "b"}),
        ("a,b", {"a", "b"}),
        (" a , b ,, ", {"a", "b"}),
        ("", set()),
        ([], set()),
    ],
)
def test_namespace_lists_or_comma_separated_strings(value: Any, expected: set[str]) -> None:
    config = parse_agent_config(minimal(includeNamespaces=value, excludeNamespaces=value))
    assert config.rules.include == frozenset(expected)
    assert config.rules.exclude == frozenset(expected)


def test_exclude_rules_are_applied() -> None:
    config = parse_agent_config(minimal(excludeNamespaces="kube-system,kube-public"))
    assert not config.rules.allows("kube-system")
    assert not config.rules.allows("kube-public")
    assert config.rules.allows("default")


def test_writes_without_kinds_allow_every_synced_kind() -> None:
    config = parse_agent_config(minimal(writes={"verbs": ["delete"]}))
    assert config.write_policy.kinds is None
    assert config.write_policy.namespaces is None
    assert config.write_policy.verbs == frozenset({Verb.DELETE})


def test_json_is_accepted_as_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.json", json.dumps(minimal(cluster="from-json")))
    assert load_agent_config(path).cluster == "from-json"


# ---------------------------------------------------------------- kubescape config.json

KUBESCAPE_CONFIG = {
    "inCluster": {
        "serverUrl": "wss://api.example.com/api/v1/synchronizer",
        "namespace": "kubescape",
        "clusterName": "kind-kind",
        "excludeNamespaces": "kube-system,kube-public",
        "includeNamespaces": "",
        "accessKey": "0f0f0f0f-kubescape-key",
        "account": "11111111-2222-3333-4444-555555555555",
        "resources": [
            {"group": "apps", "version": "v1", "resource": "deployments", "strategy": "patch"},
            {"group": "", "version": "v1", "resource": "configmaps", "strategy": "copy"},
            {
                "group": "spdx.softwarecomposition.kubescape.io",
                "version": "v1beta1",
                "resource": "applicationprofiles",
                "strategy": "copy",
            },
        ],
    }
}


def test_kubescape_config_json_is_accepted_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, "config.json", json.dumps(KUBESCAPE_CONFIG, indent=2))
    config = load_agent_config(path)
    assert config.server == "wss://api.example.com/api/v1/synchronizer"
    assert config.cluster == "kind-kind"
    assert config.account == "11111111-2222-3333-4444-555555555555"
    assert config.access_key == "0f0f0f0f-kubescape-key"
    assert config.rules.operator_namespace == "kubescape"
    assert config.rules.exclude == frozenset({"kube-system", "kube-public"})
    assert config.rules.include == frozenset()
    assert config.resources == (
        ResourceSpec(DEPLOYMENTS, Strategy.PATCH),
        ResourceSpec(CONFIGMAPS, Strategy.COPY),
        ResourceSpec(PROFILES, Strategy.COPY),
    )


def test_kubescape_config_with_a_bad_section_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config({"inCluster": ["not", "a", "mapping"]}, "config.json")
    assert_one_line(info.value, "config.json", "inCluster")


def test_kubescape_config_missing_access_key_names_it() -> None:
    section = dict(KUBESCAPE_CONFIG["inCluster"])
    del section["accessKey"]
    with pytest.raises(ConfigError) as info:
        parse_agent_config({"inCluster": section}, "config.json")
    assert_one_line(info.value, "config.json", "accessKey")


# ---------------------------------------------------------------- bad agent configs


@pytest.mark.parametrize("field", ["server", "account", "cluster", "accessKey"])
@pytest.mark.parametrize("value", [None, "", 42])
def test_required_fields(field: str, value: Any) -> None:
    doc = minimal()
    if value is None:
        del doc[field]
    else:
        doc[field] = value
    with pytest.raises(ConfigError) as info:
        parse_agent_config(doc, "agent.yaml")
    assert_one_line(info.value, "agent.yaml", field, "required")


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"resources": [{"version": "v1", "resource": "configmaps", "strategy": "mirror"}]},
         ("resources[0]", "mirror")),
        ({"resources": [{"version": "v1", "resource": "configmaps"},
                        {"group": "Apps", "version": "v1", "resource": "deployments"}]},
         ("resources[1]", "Apps")),
        ({"resources": [{"version": "v1", "resource": "Config Maps"}]},
         ("resources[0]", "Config Maps")),
        ({"resources": [{"version": "v1"}]}, ("resources[0]", "resource")),
        ({"resources": [{"resource": "configmaps"}]}, ("resources[0]", "version")),
        ({"resources": ["/v1/configmaps"]}, ("resources[0]", "mapping")),
        ({"resources": []}, ("resources", "non-empty")),
        ({"resources": None}, ("resources", "non-empty")),
        ({"resources": {"version": "v1"}}, ("resources", "list")),
        ({"includeNamespaces": [1, 2]}, ("includeNamespaces",)),
        ({"excludeNamespaces": {"a": 1}}, ("excludeNamespaces",)),
        ({"writes": {"kinds": ["apps/v1/deployments"]}}, ("writes.kinds",)),
        ({"writes": {"kinds": ["not-a-kind"]}}, ("writes", "not-a-kind")),
        ({"writes": {"verbs": ["patch"]}}, ("writes", "patch")),
        ({"writes": {"namespaces": 5}}, ("writes.namespaces",)),
        ({"writes": "everything"}, ("writes", "mapping")),
        ({"coalesce": {"quiet": 3, "maxWait": 1}}, ("coalesce.maxWait", "coalesce.quiet")),
        ({"coalesce": {"quiet": 6}}, ("coalesce.maxWait",)),  # default maxWait is 5
        ({"coalesce": {"quiet": -1}}, ("quiet", "non-negative")),
        ({"coalesce": {"maxWait": "soon"}}, ("maxWait", "number")),
        ({"coalesce": {"quiet": True}}, ("quiet", "number")),
        ({"coalesce": [1, 2]}, ("coalesce", "mapping")),
        ({"heartbeat": "often"}, ("heartbeat", "number")),
    ],
)
def test_bad_agent_configs(overrides: dict[str, Any], needles: tuple[str, ...]) -> None:
    doc = minimal()
    doc.update(overrides)
    with pytest.raises(ConfigError) as info:
        parse_agent_config(doc, "agent.yaml")
    text = assert_one_line(info.value, "agent.yaml", *needles)
    assert "None" not in text  # a missing value is reported as missing, not as the string None


def test_coalesce_max_wait_equal_to_quiet_is_fine() -> None:
    config = parse_agent_config(minimal(coalesce={"quiet": 2, "maxWait": 2}))
    assert config.coalesce_quiet == config.coalesce_max_wait == 2.0


@pytest.mark.parametrize("top", [[1, 2], "just a string", None, 42])
def test_top_level_must_be_a_mapping(tmp_path: Path, top: Any) -> None:
    path = write(tmp_path, "agent.yaml", yaml.safe_dump(top))
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert_one_line(info.value, str(path), "mapping")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_agent_config(missing)
    assert_one_line(info.value, str(missing), "cannot read", "does not exist")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_agent_config(tmp_path)
    assert_one_line(info.value, str(tmp_path), "cannot read")


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert_one_line(info.value, str(path))


@pytest.mark.parametrize(
    "text", ["server: [unclosed\n", "a: b\n  c: d\n", "key: 'open\n", "{\"server\": 1,,}"]
)
def test_invalid_yaml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "agent.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert_one_line(info.value, str(path), "not valid YAML")


# ---------------------------------------------------------------- token table

TOKENS_YAML = """\
tokens:
  - token: agent-token-cluster-a
    account: acct
    cluster: cluster-a
  - token: agent-token-cluster-b
    account: acct
    cluster: cluster-b
  - token: operator-admin-token
    role: admin
"""


def test_token_table(tmp_path: Path) -> None:
    table = load_tokens(write(tmp_path, "tokens.yaml", TOKENS_YAML))
    assert table.identify("agent-token-cluster-a") == Identity("acct", "cluster-a")
    assert table.identify("agent-token-cluster-b") == Identity("acct", "cluster-b")
    admin = table.identify("operator-admin-token")
    assert admin is not None and admin.admin
    assert table.identify("unknown-token-xyz") is None
    assert table.identify("") is None
    assert table.identify(None) is None


def test_an_entry_without_a_cluster_is_an_account_key() -> None:
    table = parse_tokens([{"token": "account-key-1", "account": "acme"}])
    key = table.identify("account-key-1")
    assert key == Identity("acme", "")
    assert key is not None and key.account_wide and not key.admin
    assert key.for_cluster("edge-7") == Identity("acme", "edge-7")


def test_token_table_as_a_bare_list() -> None:
    table = parse_tokens([{"token": "12345678", "account": "a", "cluster": "c"}])
    assert table.identify("12345678") == Identity("a", "c")
    agent = table.identify("12345678")
    assert agent is not None and not agent.admin


@pytest.mark.parametrize(
    ("doc", "needles"),
    [
        ([{"token": "same-token-1", "role": "admin"}, {"token": "same-token-1", "role": "admin"}],
         ("entry 1", "duplicate")),
        ([{"token": "short", "role": "admin"}], ("entry 0", "shorter than 8")),
        ([{"role": "admin"}], ("entry 0", "token")),
        ([{"token": 12345678901, "role": "admin"}], ("entry 0", "string token")),
        (["just-a-token-string"], ("entry 0", "token")),
        ([{"token": "agent-token-1", "account": ""}], ("entry 0", "empty account")),
        ([{"token": "agent-token-1", "cluster": "c"}], ("entry 0", "needs an account")),
        ([{"token": "agent-token-1", "account": "a", "cluster": 7}], ("entry 0", "needs an")),
        ([{"token": "agent-token-1", "role": "operator"}], ("entry 0", "role: admin")),
        ([{"token": "agent-token-1", "account": "", "cluster": "c"}], ("entry 0", "empty")),
        ({"tokens": "agent-token-1"}, ("list",)),
        ({"admin": "x"}, ("list",)),
        (None, ("list",)),
    ],
)
def test_bad_token_tables(doc: Any, needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tokens(doc, "tokens.yaml")
    assert_one_line(info.value, "tokens.yaml", *needles)


def test_token_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_tokens(tmp_path / "missing.yaml")
    assert_one_line(info.value, "missing.yaml", "cannot read")
    bad = write(tmp_path, "bad.yaml", "tokens: [\n")
    with pytest.raises(ConfigError) as info:
        load_tokens(bad)
    assert_one_line(info.value, str(bad), "not valid YAML")


def test_ca_file_must_exist(tmp_path: Path) -> None:
    ca = write(tmp_path, "ca.pem", "-----BEGIN CERTIFICATE-----\n")
    assert parse_agent_config(minimal(caFile=str(ca))).ca_file == str(ca)
    assert parse_agent_config(minimal()).ca_file is None
    with pytest.raises(ConfigError) as missing:
        parse_agent_config(minimal(caFile=str(tmp_path / "nope.pem")))
    assert_one_line(missing.value, "caFile")
    with pytest.raises(ConfigError) as wrong_type:
        parse_agent_config(minimal(caFile=["a"]))
    assert_one_line(wrong_type.value, "caFile")


def test_compress_is_a_flag() -> None:
    assert parse_agent_config(minimal()).compress is True
    assert parse_agent_config(minimal(compress=False)).compress is False
    with pytest.raises(ConfigError) as bad:
        parse_agent_config(minimal(compress="yes"))
    assert_one_line(bad.value, "compress")


def test_resync_interval_must_be_positive() -> None:
    assert parse_agent_config(minimal()).resync_interval == 600.0
    assert parse_agent_config(minimal(resyncInterval=30)).resync_interval == 30.0
    with pytest.raises(ConfigError) as bad:
        parse_agent_config(minimal(resyncInterval=0))
    assert_one_line(bad.value, "resyncInterval")


# ---------------------------------------------------------------- strictness (issue 10)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"excludeNamespace": "kube-system"},
         ("unknown key 'excludeNamespace'", "did you mean 'excludeNamespaces'")),
        ({"coalesce": {"quite": 1}}, ("'coalesce.quite'", "did you mean 'quiet'")),
        ({"writes": {"verb": ["create"]}}, ("'writes.verb'", "did you mean 'verbs'")),
        ({"resources": [{"version": "v1", "resources": "configmaps"}]},
         ("'resources[0].resources'", "did you mean 'resource'")),
        ({"zzz": 1}, ("unknown key 'zzz'",)),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(
    overrides: dict[str, Any], needles: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(minimal(**overrides), "agent.yaml")
    text = assert_one_line(info.value, "agent.yaml", *needles)
    if "zzz" in overrides:
        assert "did you mean" not in text


def test_unknown_key_inside_kubescape_in_cluster_section() -> None:
    section = dict(KUBESCAPE_CONFIG["inCluster"])
    section["clustername"] = section.pop("clusterName")
    with pytest.raises(ConfigError) as info:
        parse_agent_config({"inCluster": section}, "config.json")
    assert_one_line(info.value, "'inCluster.clustername'", "did you mean 'clusterName'")


def test_kubescape_backend_section_is_tolerated() -> None:
    doc = {**KUBESCAPE_CONFIG, "backend": {"port": 8080}}
    assert parse_agent_config(doc).cluster == "kind-kind"


def test_yaml_errors_give_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", "server: ws://x/\naccount: a\nresources: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    # The flow sequence opened on line 3 is never closed: PyYAML notices at the end (line 4).
    assert_one_line(info.value, f"{path}:4:1:", "not valid YAML")


def test_yaml_error_column_points_at_the_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", "server: ws://x/\naccount: 'open\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert_one_line(info.value, f"{path}:3:1:")


@pytest.mark.parametrize(
    ("server", "needles"),
    [
        ("backend.example.com:8080", ("needs a scheme", "ws://")),
        ("127.0.0.1:8080/", ("needs a scheme",)),
        ("ftp://backend/", ("needs a scheme",)),
        ("http://backend:8080/", ("did you mean 'ws://backend:8080/'",)),
        ("https://backend/", ("did you mean 'wss://backend/'",)),
        ("ws://:8080/", ("names no host",)),
        ("ws://backend:99999/", ("port",)),
        ("ws://backend:http/", ("port",)),
    ],
)
def test_server_urls_are_checked_at_load(server: str, needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(minimal(server=server), "agent.yaml")
    assert_one_line(info.value, "agent.yaml", repr(server), *needles)


@pytest.mark.parametrize(
    "server", ["ws://127.0.0.1:8080/", "wss://backend.example.com/api/v1/synchronizer"]
)
def test_good_server_urls(server: str) -> None:
    assert parse_agent_config(minimal(server=server)).server == server


@pytest.mark.parametrize("value", [0, -5, "soon", True])
def test_resync_interval_has_one_message(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(minimal(resyncInterval=value))
    assert_one_line(info.value, f"resyncInterval must be a positive number, got {value!r}")


@pytest.mark.parametrize(
    ("written", "expected"),
    [("configmaps", CONFIGMAPS), ("cm", CONFIGMAPS), ("ConfigMap", CONFIGMAPS),
     ("v1/configmaps", CONFIGMAPS), ("/v1/configmaps", CONFIGMAPS),
     ("deployments.apps", DEPLOYMENTS), ("deploy", DEPLOYMENTS),
     ("applicationprofiles", PROFILES)],
)
def test_write_kinds_as_kubectl_users_write_them(written: str, expected: Kind) -> None:
    resources = [
        {"version": "v1", "resource": "configmaps"},
        {"group": "apps", "version": "v1", "resource": "deployments"},
        {"group": PROFILES.group, "version": PROFILES.version, "resource": PROFILES.resource},
    ]
    config = parse_agent_config(minimal(resources=resources, writes={"kinds": [written]}))
    assert config.write_policy.kinds == frozenset({expected})


def test_unknown_write_kind_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(minimal(writes={"kinds": ["configmapz"]}), "agent.yaml")
    assert_one_line(info.value, "agent.yaml", "writes", "did you mean", "'configmaps'")


def test_write_kind_that_is_not_synced_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(minimal(writes={"kinds": ["deploy"]}), "agent.yaml")
    assert_one_line(info.value, "writes.kinds", "apps/v1/deployments is not synced")
