"""What the tablet's and the hub's image tests share: the rootfs fixtures (each test module
gives ``role`` and ``image_dir``) and the role-neutral checks (``tests/test_image.py``,
``tests/test_image_hub.py``), and the units the tablet may have enabled (the rootfs test and
the booted hardening test)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fieldkit.policies import PolicySet, load_policies, render

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rootfs(image_dir: Path) -> Path:
    return image_dir / "rootfs"


@pytest.fixture(scope="module")
def host(rootfs: Path) -> Any:
    import testinfra

    return testinfra.get_host(str(rootfs), connection="chroot")


@pytest.fixture(scope="module")
def manifest(image_dir: Path, role: str) -> dict[str, Any]:
    found = json.loads((image_dir / f"fieldkit-{role}.manifest.json").read_text())
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(REPO / "policies")


def check_every_fieldkit_unit_is_present_enabled_and_sandboxed(
    host: Any, rootfs: Path, policies: PolicySet, role: str
) -> None:
    """R30: every registered service has its unit, enabled, exposure at most the ceiling."""
    units = render(policies, "services", role)
    assert units
    for path, body in units.items():
        installed = host.file(str(path))
        assert installed.content_string == body, path.name
        assert host.service(path.name).is_enabled, path.name
        rated = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", f"--root={rootfs}", path.name],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", rated.stdout)
        assert found, rated.stdout[-400:] + rated.stderr[-400:]
        service = path.name.removeprefix("fieldkit-").removesuffix(".service")
        assert float(found.group(1)) <= policies.services.ceiling(service), path.name


def check_fieldkit_runs_from_its_venv(host: Any) -> None:
    """R31: the compliance run on the device uses the same policies the image was built from."""
    check = host.run(
        "/opt/fieldkit/venv/bin/fieldkit policy --policies /etc/fieldkit/policies check"
    )
    assert check.rc == 0, check.stderr
    assert host.user("fieldkit").shell == "/usr/sbin/nologin"


def check_suid_files_are_on_the_reviewed_list(host: Any) -> None:
    import yaml

    defaults = yaml.safe_load((REPO / "ansible/roles/hardening/defaults/main.yml").read_text())
    allowed = set(defaults["hardening_suid_allowlist"])
    found = host.run(r"find / -xdev -type f \( -perm -4000 -o -perm -2000 \) -print").stdout.split()
    assert set(found) <= allowed, set(found) - allowed


def check_second_ansible_run_changes_nothing(manifest: dict[str, Any]) -> None:
    """R28: the roles are idempotent against the same rootfs."""
    assert manifest["ansible"]["first_run"]["failed"] == 0
    if manifest["ansible"]["rerun"] is None:
        pytest.skip("this build ran with --no-rerun: there is no second run to check")
    assert manifest["ansible"]["rerun"]["changed"] == 0


def check_accounts_lock_after_failed_logins(host: Any) -> None:
    """R13: pam_faillock is in the PAM stack and configured."""
    auth = host.file("/etc/pam.d/common-auth").content_string
    modules = []
    for line in auth.splitlines():
        words = line.split()
        if not words or words[0] != "auth":
            continue
        at = next(i for i, word in enumerate(words) if word.endswith(".so"))
        name = words[at] + (f" {words[at + 1]}" if words[at] == "pam_faillock.so" else "")
        modules.append((name, line))
    names = [name for name, _ in modules]
    # preauth before pam_unix, authfail after it, and pam_unix's success jump steps over
    # authfail and pam_deny (success=2), so a right password never counts as a failure.
    assert names.index("pam_faillock.so preauth") < names.index("pam_unix.so")
    assert names.index("pam_unix.so") < names.index("pam_faillock.so authfail")
    assert "success=2" in modules[names.index("pam_unix.so")][1]
    account = host.file("/etc/pam.d/common-account").content_string
    assert re.search(r"^account\s+required\s+pam_faillock\.so", account, re.M)
    assert "deny = 5" in host.file("/etc/security/faillock.conf").content_string


def allowed_units(policies: PolicySet, role: str = "tablet") -> set[str]:
    """Every unit a device of ``role`` may have enabled: the fieldkit services (and, on the
    tablet, the erasure policy's mounts) rendered from policies/, and the system units
    services.yaml names for the role."""
    units = {p.name for p in render(policies, "services", role)}
    if role == "tablet":
        units |= {p.name for p in render(policies, "erasure") if p.suffix == ".mount"}
    return units | set(policies.services.system_units.get(role, {}))


def check_nothing_enabled_that_the_policy_does_not_name(
    rootfs: Path, policies: PolicySet, role: str
) -> set[str]:
    """Issue 19 item 4 in a rootfs: every enabled unit is rendered from policies/ or named in
    services.yaml's system_units for ``role``; the integrity units are among them. Returns the
    enabled units for the role's own checks."""
    listing = subprocess.run(
        ["systemctl", f"--root={rootfs}", "list-unit-files", "--state=enabled",
         "--no-legend", "--plain", "--no-pager"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    enabled = {line.split()[0] for line in listing.splitlines() if line.strip()}
    assert "auditd.service" in enabled and "fieldkit-integrity-check.timer" in enabled
    assert sorted(enabled - allowed_units(policies, role)) == []
    assert not any(unit.startswith("avahi") for unit in enabled)
    return enabled
