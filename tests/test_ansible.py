"""ansible/: the roles and playbooks pass ansible-lint's production profile (R28)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ANSIBLE_DIR = Path(__file__).resolve().parents[1] / "ansible"
BIN = Path(sys.executable).parent
ROLES = [
    "base",
    "hardening",
    "kiosk",
    "broker",
    "fieldkit_services",
    "cups",
    "pcscd",
    "firewall",
    "usbguard",
    "antivirus",
    "hub",
]


def tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return path


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "ANSIBLE_HOME": str(ANSIBLE_DIR / ".cache"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    return subprocess.run(
        cmd, cwd=ANSIBLE_DIR, capture_output=True, text=True, check=False, env=env, timeout=300
    )


def test_ansible_lint_production_profile_passes() -> None:
    result = run([tool("ansible-lint"), "--profile", "production", "--nocolor"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("playbook", ["tablet.yml", "hub.yml"])
def test_playbooks_parse(playbook: str) -> None:
    result = run([tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", playbook])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_every_role_follows_the_model() -> None:
    """Role-prefixed defaults, validated inputs, one task file per concern (style.md)."""
    for role in ROLES:
        base = ANSIBLE_DIR / "roles" / role
        assert (base / "meta" / "argument_specs.yml").is_file(), role
        assert (base / "defaults" / "main.yml").is_file(), role
        defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text()) or {}
        assert all(key.startswith(f"{role}_") for key in defaults), role
        specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())
        documented = set(specs["argument_specs"]["main"]["options"])
        assert set(defaults) <= documented, (role, set(defaults) - documented)
