"""The built hub image, checked with testinfra's chroot backend (issue 18; R13, R15, R16, R28, R30).

Slow: building takes minutes. ``FIELDKIT_HUB_IMAGE_DIR`` points at an existing build (the folder
holding ``rootfs/`` and ``fieldkit-hub.manifest.json``); otherwise ``fieldkit image build hub``
runs into /var/tmp/fieldkit-build/test-hub. The role-neutral checks are the tablet image's own
(tests/test_image.py), collected here again with this module's ``role`` and ``image_dir``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from fieldkit.policies import NFTABLES_PATH, PolicySet, ansible_vars, load_policies, render
from tests.support.hub_image import VENV, broker_drift
from tests.support.image_rootfs import (  # the tablet image's checks and fixtures, reused
    check_accounts_lock_after_failed_logins,
    check_every_fieldkit_unit_is_present_enabled_and_sandboxed,
    check_fieldkit_runs_from_its_venv,
    check_second_ansible_run_changes_nothing,
    check_suid_files_are_on_the_reviewed_list,
    host,
    manifest,
    policies,
    rootfs,
)

REPO = Path(__file__).resolve().parents[1]
SERVICE_USER = "fieldkit"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building and chrooting need root"),
]

__all__ = ["host", "manifest", "policies", "rootfs"]


def test_accounts_lock_after_failed_logins(host: Any) -> None:
    check_accounts_lock_after_failed_logins(host)


def test_every_fieldkit_unit_is_present_enabled_and_sandboxed(
    host: Any, rootfs: Path, policies: PolicySet, role: str
) -> None:
    check_every_fieldkit_unit_is_present_enabled_and_sandboxed(host, rootfs, policies, role)


def test_fieldkit_runs_from_its_venv(host: Any) -> None:
    check_fieldkit_runs_from_its_venv(host)


def test_second_ansible_run_changes_nothing(manifest: dict[str, Any]) -> None:
    check_second_ansible_run_changes_nothing(manifest)


def test_suid_files_are_on_the_reviewed_list(host: Any) -> None:
    check_suid_files_are_on_the_reviewed_list(host)


@pytest.fixture(scope="module")
def role() -> str:
    return "hub"


@pytest.fixture(scope="module")
def image_dir(hub_image_dir: Path) -> Path:
    return hub_image_dir


def _image_module(rootfs: Path, module: str) -> Path:
    found = sorted(rootfs.glob(f"{str(VENV).lstrip('/')}/lib/python3*/site-packages/{module}"))
    assert len(found) == 1, found
    return found[0]


def test_the_hub_broker_is_the_tested_one(rootfs: Path, policies: PolicySet) -> None:
    """Item 1: the image's fieldkit, from the image's device config, renders the same broker
    files (TLS listener, require_certificate, identity as user name and client id, the kit
    CA's CRL, the per-device ACL) as the tested development hub's code does here; its copy
    of that code is this tree's byte for byte; no other mosquitto listener is configured."""
    assert broker_drift(rootfs, policies, SERVICE_USER) == []
    for module in ("broker.py", "service.py", "settings.py"):
        image = _image_module(rootfs, f"fieldkit/hub/{module}").read_bytes()
        assert image == (REPO / "services/fieldkit/hub" / module).read_bytes(), module
    unit = (rootfs / "etc/systemd/system/fieldkit-hub-broker.service").read_text()
    assert f"ExecStart={VENV}/bin/python -m fieldkit.serve hub-broker " in unit
    assert not (rootfs / "etc/mosquitto/conf.d/hub-devices.conf").exists()


def test_a_broker_that_drifted_from_the_tested_one_is_caught(
    rootfs: Path, policies: PolicySet
) -> None:
    """The check above can fail: the image's broker code with ``require_certificate false``
    (put over it in a private mount namespace; the rootfs is not written), or an image whose
    device config moves the listener, is reported, naming the lines that differ."""
    image_broker = _image_module(rootfs, "fieldkit/hub/broker.py")
    target = Path("/") / image_broker.relative_to(rootfs)
    with tempfile.TemporaryDirectory() as folder:
        tampered = Path(folder) / "broker.py"
        text = image_broker.read_text()
        assert '"require_certificate true",' in text
        tampered.write_text(text.replace("require_certificate true", "require_certificate false"))
        drift = broker_drift(rootfs, policies, SERVICE_USER, {target: tampered})
        assert any("require_certificate false" in problem for problem in drift), drift
        assert "not rendered: 'require_certificate true'" in drift
        config = Path(folder) / "device.toml"
        installed = (rootfs / "etc/fieldkit/device.toml").read_text()
        config.write_text(installed.replace("broker_port = 8883", "broker_port = 1883"))
        drift = broker_drift(
            rootfs, policies, SERVICE_USER, {Path("/etc/fieldkit/device.toml"): config}
        )
        assert any("listener 1883 0.0.0.0" in problem for problem in drift), drift


def test_every_generated_file_in_the_hub_image_is_its_rendering(host: Any) -> None:
    """Every file fieldkit renders for the hub image is in the rootfs byte for byte."""
    wanted = ansible_vars(load_policies(REPO / "policies"), "hub", REPO / "policies")
    files: dict[str, str] = {
        **wanted["fieldkit_services_units"],
        # issue 19: the AppArmor profiles, rendered with the units
        **wanted["apparmor_profiles"],
        **wanted["firewall_network_files"],
        "/etc/nftables.conf": wanted["firewall_nftables_ruleset"],
        "/etc/fieldkit/device.toml": wanted["fieldkit_services_device_config"],
        wanted["broker_config_path"]: wanted["broker_config"],
        wanted["broker_acl_path"]: wanted["broker_acl"],
        "/etc/systemd/system/fieldkit-bus-credentials.service": wanted["broker_credentials_unit"],
        "/etc/systemd/system/mosquitto.service.d/fieldkit-scrub.conf": wanted["broker_unit_dropin"],
        "/etc/systemd/system/fieldkit-ca-signer.service": wanted[
            "fieldkit_services_ca_signer_unit"
        ],
    }
    assert wanted["fieldkit_services_device_config"]
    differ = [path for path, body in files.items() if host.file(path).content_string != body]
    assert differ == [], differ


def _postgres_setting(rootfs: Path, name: str, shadow: Path | None = None) -> str:
    """PostgreSQL's own reading of one setting of the image's cluster (``postgres -C``)."""
    conf = "/etc/postgresql/15/main/postgresql.conf"
    command = f"chroot --userspec=postgres {rootfs} /usr/lib/postgresql/15/bin/postgres"
    command += f" --config-file={conf} -C {name}"
    if shadow is not None:
        command = f"mount --bind /dev/null {rootfs}{shadow} && {command}"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_database_answers_on_its_unix_socket_only(host: Any, rootfs: Path) -> None:
    """The hub's PostgreSQL opens no TCP port (listen_addresses empty, as PostgreSQL itself
    reads the image's config); without the role's file it would listen on localhost, so the
    check can fail. The hub services reach it over /run/postgresql (peer authentication)."""
    dropin = Path("/etc/postgresql/15/main/conf.d/50-fieldkit.conf")
    assert _postgres_setting(rootfs, "listen_addresses") == ""
    assert _postgres_setting(rootfs, "listen_addresses", shadow=dropin) == "localhost"
    assert "host=/run/postgresql" in host.file("/etc/fieldkit/device.toml").content_string
    assert host.service("postgresql").is_enabled


def test_the_firewall_lets_in_only_the_hub_ports(
    host: Any, rootfs: Path, policies: PolicySet
) -> None:
    """R16: default drop; inbound only the broker, enrolment, mirror, web and admin SSH ports
    from the site's private network; the ruleset loads (in a private netns)."""
    assert (
        host.file(str(NFTABLES_PATH)).content_string
        == (render(policies, "network", "hub")[NFTABLES_PATH])
    )
    assert host.service("nftables").is_enabled
    loaded = subprocess.run(
        ["unshare", "--net", "chroot", str(rootfs), "sh", "-c",
         "nft -f /etc/nftables.conf && nft list chain inet fieldkit input"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert "policy drop;" in loaded.stdout
    ports = {int(p) for p in re.findall(r"tcp dport (\d+) accept", loaded.stdout)}
    assert ports == {8883, 8443, 8081, 8444, 22}, loaded.stdout
    assert not host.package("iwd").is_installed


def test_ssh_is_keys_only(host: Any) -> None:
    """The admin logs in with a key or not at all; root never."""
    conf = host.file("/etc/ssh/sshd_config.d/50-fieldkit.conf").content_string
    for line in (
        "AuthenticationMethods publickey",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
    ):
        assert re.search(rf"^{line}$", conf, re.M), line
    assert re.search(
        r"^Include /etc/ssh/sshd_config\.d/\*\.conf$",
        host.file("/etc/ssh/sshd_config").content_string,
        re.M,
    )


def test_first_boot_setup_backups_and_crl_run_by_themselves(host: Any) -> None:
    """The first boot makes the kit PKI and the database; the nightly encrypted backup and the
    CRL renewal run on timers; every hub unit is enabled."""
    for unit in (
        "fieldkit-hub-setup.service",
        "fieldkit-hub-backup.timer",
        "fieldkit-crl-renew.timer",
        "fieldkit-cvd-update.timer",
        "fieldkit-ca-signer.service",
        "postgresql.service",
        "mosquitto.service",
        "ssh.service",
    ):
        assert host.service(unit).is_enabled, unit
    setup = host.file("/etc/systemd/system/fieldkit-hub-setup.service").content_string
    for unit in ("fieldkit-hub-broker.service", "fieldkit-hub-ingest.service"):
        assert unit in setup
    script = host.file("/usr/local/lib/fieldkit/hub-setup.sh")
    assert script.mode == 0o755
    assert "pki --dir /var/lib/fieldkit/pki init" in script.content_string
    assert host.file("/var/lib/fieldkit").user == SERVICE_USER
    assert host.file("/var/lib/fieldkit").mode == 0o700
    # Issue 17 item 2: the CA signer's user, in the services' group; the PKI made as it.
    assert host.user("fieldkit-ca").group == SERVICE_USER
    assert host.user("fieldkit-ca").shell == "/usr/sbin/nologin"
    assert "as_ca pki --dir /var/lib/fieldkit/pki init" in script.content_string


def test_the_hub_roles_own_units_are_sandboxed_too(rootfs: Path, policies: PolicySet) -> None:
    """The first-boot setup, the CRL renewal and the backup (units of the hub role, not of a
    registered service) rate within the services' ceiling as well; the hub boots to the
    multi-user target (no display)."""
    for unit in (
        "fieldkit-hub-setup.service",
        "fieldkit-crl-renew.service",
        "fieldkit-hub-backup.service",
        "fieldkit-cvd-update.service",
        "fieldkit-ca-signer.service",
    ):
        rated = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", f"--root={rootfs}", unit],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", rated.stdout)
        assert found, rated.stdout[-400:] + rated.stderr[-400:]
        assert float(found.group(1)) <= policies.services.max_exposure, (unit, found.group(1))
    default = rootfs / "etc/systemd/system/default.target"
    assert os.readlink(default) == "/lib/systemd/system/multi-user.target"


def test_cvdupdate_is_installed_for_the_mirror(host: Any, rootfs: Path) -> None:
    """Issue 18: cvdupdate (the hub extra) runs from the venv; the config `fieldkit av mirror
    update` renders from the image's device config points it at the mirror's folder; its unit
    writes only there and in its own folder, and reaches only network.yaml's addresses."""
    from fieldkit.antivirus.official import render_cvd_config
    from fieldkit.config import load_config

    assert host.run(f"{VENV}/bin/cvd --help").rc == 0
    config = load_config(rootfs / "etc/fieldkit/device.toml")
    assert config.av_mirror.directory == Path("/var/lib/fieldkit/av-mirror")
    with tempfile.TemporaryDirectory(dir=rootfs / "tmp") as scratch:
        inside = Path("/tmp") / Path(scratch).name
        (Path(scratch) / "config.json").write_text(render_cvd_config(config.av_mirror))
        shown = host.run(f"{VENV}/bin/cvd config show --config {inside}/config.json")
    assert shown.rc == 0, shown.stderr
    assert '"db directory": "/var/lib/fieldkit/av-mirror"' in shown.stdout
    unit = host.file("/etc/systemd/system/fieldkit-cvd-update.service").content_string
    assert "av mirror update" in unit
    assert "ReadWritePaths=/var/lib/fieldkit/av-mirror /var/lib/fieldkit/cvdupdate" in unit
    assert "IPAddressDeny=any" in unit
