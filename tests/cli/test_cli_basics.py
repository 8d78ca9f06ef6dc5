"""CLI basics of issue 10: options after the sub-command, help and defaults on every option,
environment variables for the backend and token, JSON logs, one start line, ``agent --check``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import pytest
import yaml

from clustersync.cli.parser import build_parser
from clustersync.sandbox.tls import tls_material

from .clitools import Process, env, free_port, run_cli, wait_until
from .conftest import (
    ACCOUNT,
    ADMIN_TOKEN,
    CLUSTER,
    Backend,
    Cluster,
    write_agent_config,
    write_tokens,
)


def _every_parser(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _every_parser(child)
    return found


def test_every_option_has_help() -> None:
    missing = [
        f"{prog} {action.option_strings or action.dest}"
        for prog, parser in _every_parser(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


async def test_help_shows_defaults() -> None:
    result = await run_cli("backend", "--help")
    assert result.code == 0, result
    text = " ".join(result.stdout.split())
    assert "(default: sqlite:///clustersync.db)" in text
    assert "(default: 600.0)" in text  # --reconcile-interval
    assert "(default: 127.0.0.1:8080)" in text


async def test_environment_gives_backend_and_token(backend: Backend) -> None:
    result = await run_cli(
        "objects", "-o", "json",
        env_vars={"CLUSTERSYNC_BACKEND": backend.url, "CLUSTERSYNC_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert result.code == 0, result
    assert json.loads(result.stdout) == []
    refused = await run_cli(
        "objects",
        env_vars={"CLUSTERSYNC_BACKEND": backend.url, "CLUSTERSYNC_TOKEN": "wrong-token-123"},
    )
    assert refused.code == 1, refused
    assert "401" in refused.error_line()


async def test_global_options_after_the_sub_command(backend: Backend) -> None:
    # Tools log at WARNING by default: DEBUG after the sub-command must show aiohttp's or ours.
    before = await run_cli("--log-level", "DEBUG", "objects", "--backend", backend.url,
                           "--token", ADMIN_TOKEN)  # fmt: skip
    after = await run_cli("objects", "--backend", backend.url, "--token", ADMIN_TOKEN,
                          "--log-level", "DEBUG", "--log-format", "json")  # fmt: skip
    assert before.code == after.code == 0, (before, after)
    assert "DEBUG" in before.stderr
    lines = [json.loads(line) for line in after.stderr.splitlines() if line.startswith("{")]
    assert lines and any(line["level"] == "debug" for line in lines), after.stderr
    # ... and a later value wins over an earlier one.
    overridden = await run_cli("--log-level", "DEBUG", "objects", "--backend", backend.url,
                               "--token", ADMIN_TOKEN, "--log-level", "ERROR")  # fmt: skip
    assert "DEBUG" not in overridden.stderr, overridden.stderr


async def test_json_logs_and_one_start_line(tmp_path: Path, cluster: Cluster) -> None:
    port = free_port()
    backend = Process("backend", [
        "backend", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 'b.db'}",
        "--tokens", str(write_tokens(tmp_path / "tokens.yaml")), "--log-format", "json",
    ], tmp_path)  # fmt: skip
    config = write_agent_config(tmp_path / "agent.yaml", f"http://127.0.0.1:{port}",
                                cluster.kubeconfig)  # fmt: skip
    agent = Process("agent", ["agent", "--config", str(config), "--log-format", "json"], tmp_path)
    try:
        await backend.start()
        await backend.wait_for_output("serving on")
        await agent.start()

        def agent_lines() -> list[dict[str, str]]:
            return [json.loads(line) for line in agent.stderr.splitlines()]

        async def connected() -> bool:
            return any("connect" in line["msg"] for line in agent_lines())

        await wait_until(connected, "the agent to log its connection")
        for line in agent_lines():  # every line is one JSON object with the agent's identity
            assert (line["account"], line["cluster"]) == (ACCOUNT, CLUSTER), line
            assert line["time"].endswith("Z") and line["level"] and line["logger"], line
    finally:
        await agent.stop()
        await backend.stop()
    combined = backend.stdout + backend.stderr
    assert combined.count("serving on") == 1, backend.describe()
    for line in backend.stderr.splitlines():
        assert isinstance(json.loads(line), dict), line


async def test_agent_check_passes_against_a_working_setup(
    backend: Backend, cluster: Cluster, tmp_path: Path
) -> None:
    config = write_agent_config(tmp_path / "agent.yaml", backend.url, cluster.kubeconfig)
    result = await run_cli("agent", "--check", "--config", str(config))
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 5, result.stdout
    assert any("list /v1/configmaps" in line for line in lines)
    assert any("list /v1/namespaces" in line for line in lines)
    assert "accepted acct-cli/cluster-cli" in lines[-1]


async def test_agent_check_names_each_failure(
    backend: Backend, cluster: Cluster, tmp_path: Path
) -> None:
    config = write_agent_config(tmp_path / "agent.yaml", backend.url, cluster.kubeconfig,
                                access_key="not-the-agent-token")  # fmt: skip
    doc = yaml.safe_load(config.read_text())
    doc["resources"].append({"group": "example.com", "version": "v1", "resource": "widgets"})
    config.write_text(yaml.safe_dump(doc))
    result = await run_cli("agent", "--check", "--config", str(config))
    assert result.code == 1, result
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 2, result.stdout
    assert "list example.com/v1/widgets" in failed[0]
    assert "server" in failed[1] and "refused" in failed[1] and "401" in failed[1]
    assert "agent checks failed" in result.error_line()


async def test_agent_check_of_a_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("server: backend:8080\naccount: a\ncluster: c\naccessKey: k\n"
                      "resources: [{version: v1, resource: configmaps}]\n")  # fmt: skip
    result = await run_cli("agent", "--check", "--config", str(config))
    assert result.code == 2, result
    assert "needs a scheme" in result.error_line()
    typo = tmp_path / "typo.yaml"
    typo.write_text(config.read_text().replace("backend:8080", "ws://b:1/")
                    + "excludeNamespace: kube-system\n")  # fmt: skip
    result = await run_cli("agent", "--check", "--config", str(typo))
    assert result.code == 2, result
    assert "did you mean 'excludeNamespaces'" in result.error_line()


async def test_agent_check_names_a_tls_mismatch(
    backend: Backend, cluster: Cluster, tmp_path: Path
) -> None:
    # The backend serves plain HTTP: wss:// against it is a TLS handshake with a plain port.
    config = write_agent_config(tmp_path / "agent.yaml", backend.url, cluster.kubeconfig)
    doc = yaml.safe_load(config.read_text())
    doc["server"] = doc["server"].replace("ws://", "wss://")
    config.write_text(yaml.safe_dump(doc))
    result = await run_cli("agent", "--check", "--config", str(config))
    assert result.code == 1, result
    server = next(line for line in result.stdout.splitlines() if " server:" in line)
    assert server.startswith("FAIL"), result.stdout
    assert "does not speak TLS" in server and "ws:// port" in server, server


async def test_agent_check_names_a_plain_scheme_against_tls(
    cluster: Cluster, tmp_path: Path
) -> None:
    material = tls_material()
    if material is None:
        pytest.skip("openssl is not installed")
    port = free_port()
    backend = Process("tls-backend", [
        "backend", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 't.db'}",
        "--tokens", str(write_tokens(tmp_path / "tokens.yaml")),
        "--tls-cert", str(material.cert_file), "--tls-key", str(material.key_file),
    ], tmp_path)  # fmt: skip
    try:
        await backend.start()
        await backend.wait_for_output("serving on")
        config = write_agent_config(tmp_path / "agent.yaml", f"http://127.0.0.1:{port}",
                                    cluster.kubeconfig)  # fmt: skip
        result = await run_cli("agent", "--check", "--config", str(config))
    finally:
        await backend.stop()
    assert result.code == 1, result
    server = next(line for line in result.stdout.splitlines() if " server:" in line)
    assert server.startswith("FAIL") and "a wss:// (TLS) port?" in server, server


async def test_the_agent_loads_none_of_the_backends_modules(tmp_path: Path) -> None:
    """An agent starts without the bus and store adapters, the backend's services or the
    sandbox (about a tenth of a second of CPU at every start); an error still exits cleanly."""
    script = (
        "import sys\n"
        "from clustersync.cli import main\n"
        f"code = main(['agent', '--config', {str(tmp_path / 'absent.yaml')!r}])\n"
        "print(code, *sorted(m for m in sys.modules if m.startswith('clustersync.')))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env(),
    )
    out, err = await proc.communicate()
    code, *loaded = out.decode().split()
    assert code == "2" and "absent.yaml" in err.decode()
    assert "clustersync.runtime.agent" in loaded  # the agent's own modules were loaded
    unwanted = ("clustersync.adapters.bus", "clustersync.adapters.store",
                "clustersync.runtime.services", "clustersync.runtime.server",
                "clustersync.runtime.ingester", "clustersync.sandbox")
    assert [m for m in loaded if m.startswith(unwanted)] == []


async def test_an_unreachable_bus_or_database_ends_with_status_1(tmp_path: Path) -> None:
    """Their errors are named only when one is raised, and still end the command cleanly."""
    no_bus = await run_cli("ingester", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                           "--bus", f"nats://127.0.0.1:{free_port()}")
    assert no_bus.code == 1, no_bus
    assert "cannot connect to NATS" in no_bus.error_line()
    no_db = await run_cli("dlq", "list", "--db", f"postgresql://u@127.0.0.1:{free_port()}/x")
    assert no_db.code == 1, no_db
    assert "cannot connect to postgresql://" in no_db.error_line()
