"""The agent reads its token from `accessKeyFile`, so deployments mount it from a Secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clustersync.runtime.config import ConfigError, load_agent_config, parse_agent_config

BASE: dict[str, Any] = {
    "server": "wss://backend.example/",
    "account": "acme",
    "cluster": "prod-eu-1",
    "resources": [{"group": "", "version": "v1", "resource": "configmaps"}],
}


def test_the_token_comes_from_the_file_without_its_trailing_newline(tmp_path: Path) -> None:
    token = tmp_path / "accessKey"
    token.write_text("agent-token-of-prod-eu-1\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "server: wss://backend.example/\naccount: acme\ncluster: prod-eu-1\n"
        f"accessKeyFile: {token}\nresources: [{{group: '', version: v1, resource: pods}}]\n"
    )
    assert load_agent_config(config).access_key == "agent-token-of-prod-eu-1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"accessKeyFile": "/nonexistent/accessKey"}, "accessKeyFile: cannot read /nonexistent"),
        ({"accessKeyFile": ["a"]}, "accessKeyFile must be a file path"),
        ({"accessKeyFile": "{empty}"}, "is empty"),
        ({"accessKeyFile": "{token}", "accessKey": "inline-token"}, "not both"),
    ],
)
def test_bad_token_files_are_named_in_one_line(tmp_path: Path, extra: dict[str, Any],
                                               message: str) -> None:
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "token").write_text("agent-token\n")
    values = {key: value.format(empty=tmp_path / "empty", token=tmp_path / "token")
              if isinstance(value, str) else value for key, value in extra.items()}
    with pytest.raises(ConfigError) as caught:
        parse_agent_config({**BASE, **values}, "agent.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("agent.yaml: ")
    assert "\n" not in str(caught.value)


def test_an_inline_access_key_still_works() -> None:
    assert parse_agent_config({**BASE, "accessKey": "inline-token"}).access_key == "inline-token"
