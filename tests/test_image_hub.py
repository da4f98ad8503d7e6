"""The built hub image, checked with testinfra's chroot backend (issue 18; R13, R15, R16, R28, R30).

Slow: building takes minutes. ``FIELDKIT_HUB_IMAGE_DIR`` points at an existing build (the folder
holding ``rootfs/`` and ``fieldkit-hub.manifest.json``); otherwise ``fieldkit image build hub``
runs into /var/tmp/fieldkit-build/test-hub. The role-neutral checks are the tablet image's own
(tests/test_image.py), collected here again with this module's ``role`` and ``image_dir``.
"""

from __future__ import annotations

import json
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
    check_nothing_enabled_that_the_policy_does_not_name,
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
        # The office network, applied again at every boot (fieldkit.office).
        "/etc/systemd/system/fieldkit-site-network.service": wanted["firewall_site_network_unit"],
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
    # Root's alone (Lynis FILE-7524 found Debian's 0644 on the booted hub).
    for path in ("/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/50-fieldkit.conf"):
        found = host.file(path)
        assert (found.user, found.group, found.mode) == ("root", "root", 0o600), path


def test_user_homes_are_closed_to_others(host: Any, rootfs: Path) -> None:
    """Every account with a login shell has a home others cannot enter or list (750 or
    stricter; Lynis HOME-9304 found PostgreSQL's 0755 on the booted hub): the admin's and
    postgres's."""
    shells = 0
    for line in (rootfs / "etc/passwd").read_text().splitlines():
        name, *_, home, shell = line.split(":")
        # Lynis's own exclusions (root and the accounts whose "shell" is one command).
        if name in ("daemon", "git", "halt", "root", "shutdown", "sync") or shell.endswith(
            ("/false", "/nologin")
        ):
            continue
        shells += 1
        found = host.file(home)
        if found.exists:
            assert found.mode & 0o027 == 0, (name, home, oct(found.mode))
    assert shells >= 2


def test_the_admin_logs_in_with_a_key_and_sudo_asks_their_password(
    host: Any, image_dir: Path
) -> None:
    """The provisioning admin (`--admin-ssh-keys`, `--admin-password-hash`): their public key
    installed, their password the given hash (sudo asks it; SSH never does), sudo for them
    alone, on a pseudo-terminal and logged; no NOPASSWD anywhere; the sudoers parse."""
    given = json.loads((image_dir / "policy-vars.json").read_text())
    assert "hub_admin_password_hash" in given, "the test hub is built with an admin"
    admin = "fkadmin"
    keys = host.file(f"/home/{admin}/.ssh/authorized_keys")
    assert (keys.user, keys.mode) == (admin, 0o600)
    assert keys.content_string == given["hub_admin_authorized_keys"]
    shadow = host.run(f"getent shadow {admin}").stdout.split(":")
    assert shadow[1] == given["hub_admin_password_hash"]
    assert host.package("sudo").is_installed
    rule = host.file("/etc/sudoers.d/50-fieldkit-admin")
    assert (rule.user, rule.group, rule.mode) == ("root", "root", 0o440)
    for line in (
        "Defaults use_pty",
        'Defaults logfile="/var/log/sudo.log"',
        f"{admin} ALL=(ALL:ALL) ALL",
    ):
        assert line in rule.content_string.splitlines(), line
    every = host.run("cat /etc/sudoers /etc/sudoers.d/*").stdout
    assert "NOPASSWD" not in every
    assert host.run("visudo -c").rc == 0


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


def test_the_admin_sets_the_office_network_with_the_images_own_command(
    host: Any, rootfs: Path
) -> None:
    """The image carries `fieldkit hub network` and the boot unit that applies it; run in the
    rootfs (its venv, its policies, a private network namespace), it fields the firewall with
    the office's DNS, time and proxy only, and cvdupdate's unit waits for it."""
    assert host.service("fieldkit-site-network.service").is_enabled
    unit = host.file("/etc/systemd/system/fieldkit-site-network.service").content_string
    assert "network apply --boot --role hub" in unit
    cvd = host.file("/etc/systemd/system/fieldkit-cvd-update.service").content_string
    assert "fieldkit-site-network.service" in cvd
    with tempfile.TemporaryDirectory(dir=rootfs / "tmp") as scratch:
        inside = Path("/tmp") / Path(scratch).name
        command = (
            f"{VENV}/bin/fieldkit hub network --root {inside} --policies /etc/fieldkit/policies"
            " --dns 10.1.0.53 --time 10.1.0.123 --proxy 10.1.0.8:8080"
        )
        done = subprocess.run(
            ["unshare", "--net", "chroot", str(rootfs), "sh", "-c", command],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        ruleset = (Path(scratch) / "etc/nftables.conf").read_text()
        dropin = Path(scratch) / "etc/systemd/system/fieldkit-cvd-update.service.d"
        assert "https_proxy=http://10.1.0.8:8080/" in (dropin / "office-network.conf").read_text()
    chain = ruleset[ruleset.index("chain output") :]
    assert re.findall(r'accept comment "([a-z-]+)"', chain) == [
        "dhcp",
        "hub-dns",
        "hub-time",
        "hub-proxy",
    ]
    assert "tcp dport { 8080 }" in chain and "443" not in chain


# --- issue 19 on the hub -------------------------------------------------------------------


def _hub_integrity_vars() -> dict[str, Any]:
    import yaml

    found = yaml.safe_load((REPO / "ansible/vars/hub-integrity.yml").read_text(encoding="utf-8"))
    assert isinstance(found, dict)
    return found


def test_nothing_enabled_on_the_hub_that_the_policy_does_not_name(
    rootfs: Path, policies: PolicySet
) -> None:
    """Issue 19 item 4 on the hub (the booted hub's twin is test_image_hub_boot.py): every
    enabled unit is rendered from policies/ or named in services.yaml's system_units.hub."""
    check_nothing_enabled_that_the_policy_does_not_name(rootfs, policies, "hub")


def test_the_integrity_units_folders_are_on_the_hubs_disk(rootfs: Path) -> None:
    """systemd refuses to start a unit whose ReadWritePaths= folder is missing (226/NAMESPACE).
    The integrity role's oneshots run at boot, before anything of fieldkit's could make a
    folder, and the hub has no data volume whose layout makes them (the tablet's does): each
    must be in the image. The reports folder was not, and both failed on the hub's first
    booted check."""
    missing = []
    # /var/lib/fieldkit is the services' user's alone (0700): root without CAP_DAC_OVERRIDE
    # (the audit summary) cannot reach a folder under it.
    assert (rootfs / "var/lib/fieldkit-integrity").is_dir()
    for name in ("fieldkit-integrity-check.service", "fieldkit-audit-summary.service"):
        unit = (rootfs / "etc/systemd/system" / name).read_text()
        for line in unit.splitlines():
            if line.startswith("ReadWritePaths="):
                paths = line.split("=", 1)[1].split()
                missing += [f"{name}: {p}" for p in paths if not (rootfs / p.lstrip("/")).is_dir()]
    assert missing == []


def test_the_hub_audits_to_its_own_disk_sized_rotated_without_arguments(host: Any) -> None:
    """Issue 19 item 2 on the hub: auditd enabled, its log in /var/log/audit on the hub's disk
    (no data volume: no wait for one), 10 x 8 MiB rotated; the tablet's rules (identity, time,
    modules, mounts, every SUID/SGID file, the hub's policy and configuration files), no
    EXECVE/PROCTITLE records, locked; audit=1 on the kernel command line."""
    wanted = _hub_integrity_vars()
    assert host.service("auditd").is_enabled
    conf = host.file("/etc/audit/auditd.conf").content_string
    for key, value in wanted["integrity_auditd_conf"].items():
        assert re.search(rf"^{key} = {re.escape(str(value))}$", conf, re.M), key
    assert wanted["integrity_auditd_conf"]["log_file"] == "/var/log/audit/audit.log"
    folder = host.file("/var/log/audit")
    assert folder.is_directory and folder.user == "root" and folder.mode == 0o700
    assert not host.file("/etc/systemd/system/auditd.service.d/50-fieldkit-datavol.conf").exists
    rules = host.file("/etc/audit/rules.d/50-fieldkit.rules").content_string
    lines = [x for x in rules.splitlines() if x and not x.startswith("#")]
    assert lines[-1] == "-e 2"
    assert "-a always,exclude -F msgtype=EXECVE" in lines
    assert "-a always,exclude -F msgtype=PROCTITLE" in lines
    for key in ("identity", "time-change", "kernel_modules", "mounts", "privileged", "logins"):
        assert f"-k {key}" in rules, key
    for path in wanted["integrity_audit_policy_paths"]:
        assert f"-w {path} -p wa -k fieldkit-policy" in rules, path
        assert host.file(str(Path(path).parent)).is_directory, path  # a watch needs its parent
    suid = host.run(r"find / -xdev -type f \( -perm -4000 -o -perm -2000 \) -print").stdout.split()
    for path in suid:
        assert f"-F path={path} -F perm=x" in rules, path
    import yaml

    profile = yaml.safe_load((REPO / "image" / "hub.yaml").read_text(encoding="utf-8"))
    assert {"audit=1", "audit_backlog_limit=8192"} <= set(profile["kernel_cmdline"].split())


def test_the_hub_aide_baseline_is_the_finished_image(
    host: Any, rootfs: Path, manifest: dict[str, Any]
) -> None:
    """Issue 19 item 3 on the hub: the pack step's baseline, the hub's exclusions (database,
    PKI, backups), the check's timer; the finished tree checks clean against it."""
    database = rootfs / "var/lib/aide/aide.db"
    assert database.exists() and database.stat().st_mode & 0o077 == 0
    assert "integrity_baseline" in manifest["timings_seconds"]
    config = host.file("/etc/aide/aide.conf").content_string
    for path in _hub_integrity_vars()["integrity_aide_exclude"]:
        assert f"!{re.escape(path)}($|/)" in config, path
    assert "!/var/lib/postgresql($|/)" in config
    assert host.service("fieldkit-integrity-check.timer").is_enabled
    check = host.run("aide --config /etc/aide/aide.conf --check")
    assert check.rc == 0, check.stdout[-3000:]


def test_the_hub_has_the_auditors_hardening(host: Any) -> None:
    """Lynis's findings the hub fixes (issue 19): no core dumps, no USB storage, debsums, sshd
    without forwarding, tunnels or idle sessions."""
    limits = host.file("/etc/security/limits.d/10-fieldkit-core.conf").content_string
    assert "* hard core 0" in limits
    assert "ulimit -c 0" in host.file("/etc/profile.d/fieldkit-shell.sh").content_string
    modprobe = host.file("/etc/modprobe.d/fieldkit-hardening.conf").content_string
    assert "install usb-storage /bin/true" in modprobe
    assert host.package("debsums").is_installed
    jail = host.file("/etc/fail2ban/jail.d/50-fieldkit.local").content_string
    assert "[sshd]" in jail and "backend = systemd" in jail and "nftables" in jail
    assert host.service("fail2ban").is_enabled
    assert host.file("/boot").exists
    for found in host.run("ls /boot/System.map-*").stdout.split():
        assert host.file(found).mode == 0o600, found
    assert "daily" in host.file("/etc/logrotate.conf").content_string.splitlines()
    conf = host.file("/etc/ssh/sshd_config.d/50-fieldkit.conf").content_string
    for line in ("AllowTcpForwarding no", "AllowAgentForwarding no", "PermitTunnel no",
                 "ClientAliveInterval 300", "ClientAliveCountMax 2", "MaxSessions 2"):  # fmt: skip
        assert line in conf.splitlines(), line
