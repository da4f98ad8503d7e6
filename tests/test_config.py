"""The device config: typed, validated, overridable by environment; errors name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fieldkit.config import ConfigError, load_config
from tests.conftest import write_config


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.device.id == "test-tablet-01"
    assert config.bus.host == "127.0.0.1"
    assert config.bus.runtime_dir.is_absolute()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDKIT_BUS__PORT", "18899")
    monkeypatch.setenv("FIELDKIT_DEVICE__SITE", "市民会館")
    config = load_config(write_config(tmp_path))
    assert config.bus.port == 18899
    assert config.device.site == "市民会館"
    assert config.device.id == "test-tablet-01"  # untouched keys keep the file's value


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("[bus]\nkeepalive = 'often'\n", "bus.keepalive", "valid integer"),
        ("[bus]\nhost = '192.168.1.10'\n", "bus.host", "loopback"),
        ("[bus]\ncolour = 'blue'\n", "bus.colour", "Extra inputs"),
        ("[runner]\nstable_after = -1\n", "runner.stable_after", "greater than 0"),
    ],
)
def test_bad_config_names_the_key_and_the_problem(
    tmp_path: Path, body: str, key: str, problem: str
) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    # Merge the override into the file: replace a section header's first occurrence.
    section = body.split("\n", 1)[0]
    path.write_text(text.replace(section, body.rstrip("\n"), 1) if section in text else text + body)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert key in str(error.value)
    assert problem in str(error.value)
    assert "192.168" not in str(error.value)  # values are not echoed


def test_bad_environment_override_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIELDKIT_BUS__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"bus\.port"):
        load_config(write_config(tmp_path))


def test_missing_device_id_and_broken_toml(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text("[device]\nrole = 'tablet'\n")
    with pytest.raises(ConfigError, match=r"device\.id: Field required"):
        load_config(path)
    path.write_text("[device\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_cli_fails_at_start_with_the_message(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text("[device]\nid = 'Bad ID!'\n")
    out = subprocess.run(
        [sys.executable, "-m", "fieldkit", "--config", str(path), "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "device.id" in out.stderr and "pattern" in out.stderr
