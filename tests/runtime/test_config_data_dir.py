"""The agent's ``dataDir``: optional, a directory (made on first save), never a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clustersync.runtime.config import ConfigError, parse_agent_config


def config(**extra: Any) -> dict[str, Any]:
    return {
        "server": "ws://backend:8080/",
        "account": "a",
        "cluster": "c",
        "accessKey": "k",
        "resources": [{"version": "v1", "resource": "pods"}],
        **extra,
    }


def test_data_dir_is_optional() -> None:
    assert parse_agent_config(config()).data_dir is None
    assert parse_agent_config(config(dataDir="")).data_dir is None


def test_data_dir_may_exist_or_not_yet(tmp_path: Path) -> None:
    assert parse_agent_config(config(dataDir=str(tmp_path))).data_dir == str(tmp_path)
    later = tmp_path / "made-on-first-save"
    assert parse_agent_config(config(dataDir=str(later))).data_dir == str(later)


def test_data_dir_must_not_be_a_file_or_a_non_string(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"dataDir: .* is not a directory"):
        parse_agent_config(config(dataDir=str(a_file)))
    with pytest.raises(ConfigError, match="dataDir must be a directory path"):
        parse_agent_config(config(dataDir=5))


def test_a_misspelt_data_dir_is_reported() -> None:
    with pytest.raises(ConfigError, match="dataDir"):
        parse_agent_config(config(datadir="/var/lib/x"))
