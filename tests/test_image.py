"""The built tablet image, checked with testinfra's chroot backend (R10, R11, R16, R18, R28, R30).

Slow: the first build takes minutes (mmdebstrap + Ansible + packing). Run with
``./dev.sh test --slow -k image``. To check an existing build instead of building, point
FIELDKIT_IMAGE_DIR at its output directory (the one holding ``rootfs/`` and the manifest).

The checks are static (files, units, packages, permissions) because the rootfs is not
booted; ``systemd-analyze security --offline --root`` rates the units without running them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from fieldkit.datavol import DATA_PARTITION_TYPE
from fieldkit.policies import (
    BROWSER_POLICY_PATH,
    NFTABLES_PATH,
    USBGUARD_RULES_PATH,
    PolicySet,
    ansible_vars,
    load_policies,
    render,
)

testinfra = pytest.importorskip("testinfra")

from tests.support.image_rootfs import (  # noqa: E402 - after the importorskip
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

# The shared fixtures, used by name (tests/support/image_rootfs.py).
__all__ = ["host", "manifest", "policies", "rootfs"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building and chrooting need root"),
]


@pytest.fixture(scope="module")
def role() -> str:
    """The image's role: tests/test_image_hub.py reuses the role-neutral checks with "hub"."""
    return "tablet"


@pytest.fixture(scope="module")
def image_dir(tablet_image_dir: Path) -> Path:
    return tablet_image_dir


def test_browser_policy_is_what_policies_render(host: Any, policies: PolicySet) -> None:
    """R11, R30: the installed managed policy is byte-for-byte the rendering."""
    installed = host.file(str(BROWSER_POLICY_PATH))
    assert installed.exists and installed.user == "root" and installed.mode == 0o644
    assert installed.content_string == render(policies, "browser")[BROWSER_POLICY_PATH]


def test_usb_storage_is_blocked(host: Any, policies: PolicySet) -> None:
    """R16, R23: USBGuard rules from the policy, parsed by USBGuard itself; storage drivers off."""
    rules = host.file(str(USBGUARD_RULES_PATH))
    assert rules.content_string == render(policies, "usb")[USBGUARD_RULES_PATH]
    assert rules.mode == 0o600
    assert host.run("usbguard-rule-parser -f /etc/usbguard/rules.conf").rc == 0
    modprobe = host.file("/etc/modprobe.d/fieldkit-usb.conf").content_string
    assert "install usb_storage /bin/false" in modprobe
    assert "install uas /bin/false" in modprobe
    daemon = host.file("/etc/usbguard/usbguard-daemon.conf").content_string
    assert re.search(r"^ImplicitPolicyTarget=block$", daemon, re.M)
    assert host.service("usbguard").is_enabled


def test_journald_is_volatile(host: Any) -> None:
    """R12: logs live in RAM only."""
    conf = host.file("/etc/systemd/journald.conf.d/50-fieldkit.conf").content_string
    assert "Storage=volatile" in conf


def test_no_core_dumps(host: Any) -> None:
    """R12: no process memory is ever written to disk."""
    assert (
        "Storage=none" in host.file("/etc/systemd/coredump.conf.d/50-fieldkit.conf").content_string
    )
    assert (
        "hard    core    0"
        in host.file("/etc/security/limits.d/50-fieldkit-nocore.conf").content_string
    )
    sysctl = host.file("/etc/sysctl.d/50-fieldkit-erasure.conf").content_string
    assert "kernel.core_pattern = |/bin/false" in sysctl
    assert "fs.suid_dumpable = 0" in sysctl


def test_no_swap(host: Any, rootfs: Path) -> None:
    """R12: swap.target masked, no swap in fstab."""
    target = rootfs / "etc/systemd/system/swap.target"
    assert target.is_symlink() and os.readlink(target) == "/dev/null"
    assert not re.search(r"\sswap\s", host.file("/etc/fstab").content_string)


def test_tmpfs_mounts_are_enabled(host: Any, rootfs: Path, policies: PolicySet) -> None:
    """R6, R12: /tmp, the CUPS spool, the session folder and the browser profile are RAM-only."""
    from fieldkit.policies import mount_unit_name

    wants = rootfs / "etc/systemd/system/local-fs.target.wants"
    for mount in policies.erasure.tmpfs:
        name = mount_unit_name(mount.path)
        assert (rootfs / "etc/systemd/system" / name).is_file(), name
        assert (wants / name).is_symlink(), name


def test_cups_keeps_no_job_files_or_history(host: Any) -> None:
    """R6: CUPS preserve off."""
    conf = host.file("/etc/cups/cupsd.conf").content_string
    assert re.search(r"^PreserveJobHistory No$", conf, re.M)
    assert re.search(r"^PreserveJobFiles No$", conf, re.M)
    assert re.search(r"^Listen localhost:631$", conf, re.M)


def test_a_usb_printer_gets_the_queue_without_dns_sd_or_traces(host: Any) -> None:
    """R9, R12: ipp-usb on loopback, no DNS-SD, errors-only logs; udev starts the queue unit."""
    conf = host.file("/etc/ipp-usb/ipp-usb.conf").content_string
    assert re.search(r"^\s*dns-sd = disable$", conf, re.M)
    assert re.search(r"^\s*interface = loopback$", conf, re.M)
    assert re.search(r"^\s*device-log = error$", conf, re.M)
    unit = host.file("/etc/systemd/system/fieldkit-printer-usb.service").content_string
    assert "printer add --usb" in unit
    assert (
        "fieldkit-printer-usb.service"
        in host.file("/etc/udev/rules.d/72-fieldkit-printer.rules").content_string
    )
    assert host.exists("ipptool")


def test_nftables_default_drop_with_allowlist(host: Any, rootfs: Path, policies: PolicySet) -> None:
    """R16: the ruleset is the rendering, enabled at boot, and loads (in a private netns)."""
    ruleset = host.file(str(NFTABLES_PATH))
    assert ruleset.content_string == render(policies, "network")[NFTABLES_PATH]
    assert host.service("nftables").is_enabled
    loaded = subprocess.run(
        [
            "unshare",
            "--net",
            "chroot",
            str(rootfs),
            "sh",
            "-c",
            "nft -f /etc/nftables.conf && nft list ruleset",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.count("policy drop;") == 3
    for rule in policies.network.outbound:
        assert rule.name in loaded.stdout


def test_the_wire_has_dhcp_and_kernel_updates_reach_the_esp(host: Any) -> None:
    """R16, R18: a fresh tablet gets an address to enrol; the kernel hooks copy an update to
    the ESP that systemd-boot boots (docs/network.md)."""
    assert host.service("systemd-networkd").is_enabled
    assert host.service("iwd").is_enabled
    # Masked: the boot does not wait two minutes for a network that may not be there.
    wait_online = host.file("/etc/systemd/system/systemd-networkd-wait-online.service")
    assert wait_online.is_symlink and wait_online.linked_to == "/dev/null"
    for hook in (
        "/etc/kernel/postinst.d/zz-fieldkit-esp",
        "/etc/initramfs/post-update.d/zz-fieldkit-esp",
    ):
        assert host.file(hook).mode == 0o755, hook
    assert host.file("/usr/local/sbin/fieldkit-esp-sync").mode == 0o755


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_every_fieldkit_unit_is_present_enabled_and_sandboxed(
    host: Any, rootfs: Path, policies: PolicySet, role: str
) -> None:
    check_every_fieldkit_unit_is_present_enabled_and_sandboxed(host, rootfs, policies, role)


def test_every_generated_file_in_the_image_is_its_rendering(host: Any) -> None:
    """Issue 14: every file fieldkit renders for the image (`fieldkit policy vars`) is in the
    rootfs byte for byte: the roles copy renderings, they do not template their own."""
    wanted = ansible_vars(load_policies(REPO / "policies"), "tablet", REPO / "policies")
    files: dict[str, str] = {
        **wanted["hardening_erasure_files"],
        **wanted["usbguard_modprobe_files"],
        **wanted["fieldkit_services_units"],
        # issue 19: the AppArmor profiles, rendered with the units
        **wanted["apparmor_profiles"],
        **wanted["firewall_network_files"],
        wanted["kiosk_browser_policy_file"]: wanted["kiosk_browser_policy_json"],
        "/etc/nftables.conf": wanted["firewall_nftables_ruleset"],
        "/etc/usbguard/rules.conf": wanted["usbguard_rules"],
        "/etc/clamav/freshclam.conf": wanted["antivirus_freshclam_conf"],
        FRESHCLAM_DROPIN: wanted["antivirus_freshclam_dropin"],
        wanted["broker_config_path"]: wanted["broker_config"],
        wanted["broker_acl_path"]: wanted["broker_acl"],
        "/etc/systemd/system/fieldkit-bus-credentials.service": wanted["broker_credentials_unit"],
        "/etc/systemd/system/fieldkit-site-network.service": wanted["firewall_site_network_unit"],
        "/etc/fieldkit/device.toml": wanted["fieldkit_services_device_config"],
    }
    differ = [path for path, body in files.items() if host.file(path).content_string != body]
    assert differ == [], differ


def test_the_bus_broker_runs_the_development_kits_rendering(host: Any) -> None:
    """R6, R29: mosquitto.conf, the ACL and the drop-in are the renderings the development kit
    runs (fieldkit.broker.render_config, render_acl): no template of our own, no drift."""
    wanted = ansible_vars(load_policies(REPO / "policies"), "tablet")
    for path, body in [
        (wanted["broker_config_path"], wanted["broker_config"]),
        (wanted["broker_acl_path"], wanted["broker_acl"]),
        (
            "/etc/systemd/system/mosquitto.service.d/fieldkit-scrub.conf",
            wanted["broker_unit_dropin"],
        ),
    ]:
        assert host.file(path).content_string == body, path
    assert not host.file("/etc/mosquitto/conf.d/fieldkit.conf").exists
    assert host.service("mosquitto").is_enabled


def test_fieldkit_runs_from_its_venv(host: Any) -> None:
    check_fieldkit_runs_from_its_venv(host)


def test_no_compilers_and_no_ssh_server(host: Any) -> None:
    """R17, R30: a tablet carries application functions only."""
    for tool in ("gcc", "cc", "c++", "make", "gdb", "tcpdump"):
        assert host.run(f"command -v {tool}").rc != 0, tool
    for package in ("gcc", "make", "openssh-server"):
        assert not host.package(package).is_installed, package
    assert not host.file("/usr/sbin/sshd").exists


def test_suid_files_are_on_the_reviewed_list(host: Any) -> None:
    check_suid_files_are_on_the_reviewed_list(host)


FRESHCLAM_DROPIN = "/etc/systemd/system/clamav-freshclam.service.d/fieldkit.conf"


def test_antivirus_and_updates(host: Any) -> None:
    """R10: freshclam from the hub mirror, enabled; R18: unattended security upgrades."""
    from fieldkit.policies import freshclam_conf

    fresh = host.file("/etc/clamav/freshclam.conf").content_string
    assert fresh == freshclam_conf(REPO / "policies")
    assert re.search(r"^PrivateMirror https://\S+", fresh, re.M)
    assert not re.search(r"^DatabaseMirror\s", fresh, re.M)
    assert host.service("clamav-freshclam").is_enabled
    # The HTTPS mirror on the kit CA alone: its bundle, and no system CA folder in the namespace.
    dropin = host.file(FRESHCLAM_DROPIN).content_string.splitlines()
    assert "Environment=CURL_CA_BUNDLE=/etc/fieldkit/kit-ca.crt" in dropin
    assert "TemporaryFileSystem=/etc/ssl/certs:ro" in dropin
    auto = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'Unattended-Upgrade "1"' in auto
    assert host.package("unattended-upgrades").is_installed


def test_second_ansible_run_changes_nothing(manifest: dict[str, Any]) -> None:
    check_second_ansible_run_changes_nothing(manifest)


def test_disk_image_matches_manifest(image_dir: Path, manifest: dict[str, Any]) -> None:
    """The raw image is a GPT disk with an ESP holding systemd-boot, and its sha256 is recorded."""
    disk = image_dir / manifest["image"]["file"]
    digest = hashlib.sha256()
    with disk.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    assert digest.hexdigest() == manifest["image"]["sha256"]
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    assert table["label"] == "gpt"
    types = [p["type"] for p in table["partitions"]]
    assert types == [
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        DATA_PARTITION_TYPE,  # the encrypted data volume's placeholder, made on first boot
    ]
    data = table["partitions"][2]
    assert data["name"] == "fieldkit-data"
    assert data["uuid"].lower() == manifest["image"]["layout"]["data"]["partuuid"]
    esp_offset = manifest["image"]["layout"]["esp"]["offset"]
    listing = subprocess.run(
        ["mdir", "-b", f"-i{disk}@@{esp_offset}", "::/EFI/BOOT"],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"MTOOLS_SKIP_CHECK": "1"},
    )
    assert "BOOTX64.EFI" in listing.stdout.upper(), listing.stderr
    names = {p["package"] for p in manifest["packages"]}
    assert {"chromium", "usbguard", "nftables", "clamav", "cage"} <= names


def test_the_data_volume_is_opened_by_the_tpm_and_mounted(
    host: Any, rootfs: Path, manifest: dict[str, Any], policies: PolicySet
) -> None:
    """R12, R24: crypttab opens partition 3 with the TPM and no passphrase, fstab mounts it,
    the first-boot and layout units are wired, the keys live on the volume."""
    volume = policies.erasure.data_volume
    assert volume is not None
    partuuid = manifest["image"]["layout"]["data"]["partuuid"]
    crypttab = host.file("/etc/crypttab").content_string
    assert volume.crypttab_line(partuuid) in crypttab
    assert volume.fstab_line() in host.file("/etc/fstab").content_string
    wants = rootfs / "etc/systemd/system/multi-user.target.wants/fieldkit-datavol.service"
    assert wants.is_symlink()
    for link, target in volume.links.items():
        # The link itself (its target is made on the volume at first boot, so readlink -f,
        # which testinfra's linked_to runs, has nothing to resolve in the rootfs).
        path = rootfs / str(link).lstrip("/")
        assert path.is_symlink() and os.readlink(path) == str(target), link
    for library in ("libtss2-esys.so.0", "libtss2-rc.so.0", "libtss2-mu.so.0"):
        assert host.run(f"ldconfig -p | grep -q {library}").rc == 0, library
    for tool in ("cryptsetup", "sfdisk", "systemd-cryptenroll"):
        assert host.exists(tool), tool


def test_accounts_lock_after_failed_logins(host: Any) -> None:
    check_accounts_lock_after_failed_logins(host)


def _hardening_defaults() -> dict[str, Any]:
    import yaml

    found = yaml.safe_load((REPO / "ansible/roles/hardening/defaults/main.yml").read_text())
    assert isinstance(found, dict)
    return found


def test_su_shell_timeout_umask_and_password_quality(host: Any) -> None:
    """Issue 19 (CIS account rules): su only for the empty su group; a login shell times out
    and starts with umask 027; pam_pwquality in the password stack with the role's rules."""
    defaults = _hardening_defaults()
    group = defaults["hardening_su_group"]
    su = host.file("/etc/pam.d/su").content_string
    assert re.search(rf"^auth\s+required\s+pam_wheel\.so use_uid group={group}$", su, re.M), su
    assert host.group(group).exists
    members = host.run(f"getent group {group}").stdout.strip().split(":")[-1]
    assert members == "", members  # nobody may su
    shell = host.file("/etc/profile.d/fieldkit-shell.sh").content_string
    assert f"TMOUT={defaults['hardening_shell_timeout']}" in shell and "readonly TMOUT" in shell
    assert "umask 027" in shell
    assert host.package("libpam-pwquality").is_installed
    assert re.search(
        r"^password\s+requisite\s+pam_pwquality\.so",
        host.file("/etc/pam.d/common-password").content_string,
        re.M,
    )
    quality = host.file("/etc/security/pwquality.conf").content_string
    for key, value in defaults["hardening_pwquality"].items():
        assert re.search(rf"^{key} = {value}$", quality, re.M), key


def test_network_sysctls_and_no_mdns_daemon(host: Any) -> None:
    """Issue 19: every kernel setting of the role is in sysctl.d (the booted VM checks the live
    values); avahi-daemon, installed only as ipp-usb's dependency, is masked."""
    installed = host.file("/etc/sysctl.d/99-zz-fieldkit-hardening.conf").content_string
    for key, value in _hardening_defaults()["hardening_sysctl"].items():
        assert f"{key} = {value}" in installed, key
    for unit in ("avahi-daemon.service", "avahi-daemon.socket"):
        link = host.file(f"/etc/systemd/system/{unit}")
        assert link.is_symlink and link.linked_to == "/dev/null", unit


def _integrity_defaults() -> dict[str, Any]:
    path = REPO / "ansible" / "roles" / "integrity" / "defaults" / "main.yml"
    found = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(found, dict)
    return found


def test_cron_and_at_are_absent_or_root_only(host: Any) -> None:
    """Issue 19 (CIS 5.1.8/5.1.9): no cron or at daemon; should one come, only root uses it."""
    for package in ("cron", "cronie", "anacron", "at", "systemd-cron"):
        assert not host.package(package).is_installed, package
    for name in ("cron", "at"):
        allow = host.file(f"/etc/{name}.allow")
        assert allow.content_string == "root\n" and allow.user == "root", name
        assert allow.mode == 0o600, name
        assert not host.file(f"/etc/{name}.deny").exists, name
    for folder in ("cron.d", "cron.daily", "cron.hourly", "cron.weekly", "cron.monthly"):
        assert host.file(f"/etc/{folder}").mode == 0o700, folder


def test_unused_units_are_masked(host: Any) -> None:
    """Issue 19 item 4: what the kit does not use cannot be started, or enabled by an update."""
    defaults = _hardening_defaults()
    for unit in [*defaults["hardening_units_masked"], "dailyaidecheck.timer"]:
        link = host.file(f"/etc/systemd/system/{unit}")
        assert link.is_symlink and link.linked_to == "/dev/null", unit


def test_boot_loader_editor_off_and_command_line_fixed(
    image_dir: Path, manifest: dict[str, Any]
) -> None:
    """Issue 19: systemd-boot on the ESP lets nobody edit the kernel command line, which is the
    profile's (audit=1 with a backlog for the boot before auditd opens its log)."""
    disk = image_dir / manifest["image"]["file"]
    esp = f"-i{disk}@@{manifest['image']['layout']['esp']['offset']}"
    env = os.environ | {"MTOOLS_SKIP_CHECK": "1"}

    def esp_file(name: str) -> str:
        done = subprocess.run(["mtype", esp, name], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    loader = esp_file("::/loader/loader.conf").split("\n")
    assert "editor no" in loader and "timeout 0" in loader, loader
    profile = yaml.safe_load((REPO / "image" / "tablet.yaml").read_text(encoding="utf-8"))
    entry = esp_file("::/loader/entries/fieldkit.conf")
    options = re.search(r"^options root=PARTUUID=\S+ (.+)$", entry, re.M)
    assert options is not None and options.group(1) == profile["kernel_cmdline"], entry
    assert "audit=1" in profile["kernel_cmdline"].split()
    assert "audit_backlog_limit=8192" in profile["kernel_cmdline"].split()


def test_auditd_rules_logs_on_the_data_volume_and_no_arguments(
    host: Any, policies: PolicySet
) -> None:
    """Issue 19 item 2: auditd enabled, waiting for the data volume its log is on (sized and
    rotated); the rules cover identity, time, modules, mounts, every SUID/SGID file left in
    the image and the policy files, drop EXECVE and PROCTITLE records, and lock themselves."""
    defaults = _integrity_defaults()
    assert host.package("auditd").is_installed
    assert host.service("auditd").is_enabled
    conf = host.file("/etc/audit/auditd.conf").content_string
    for key, value in defaults["integrity_auditd_conf"].items():
        assert re.search(rf"^{key} = {re.escape(str(value))}$", conf, re.M), key
    log_dir = defaults["integrity_audit_log_dir"]
    volume = policies.erasure.data_volume
    assert volume is not None
    assert PurePosixPath(log_dir).is_relative_to(volume.mount)
    assert PurePosixPath(log_dir) in {d.path for d in volume.directories}
    dropin = host.file("/etc/systemd/system/auditd.service.d/50-fieldkit-datavol.conf")
    assert f"RequiresMountsFor={volume.mount}" in dropin.content_string
    rules = host.file("/etc/audit/rules.d/50-fieldkit.rules").content_string
    assert not host.file("/etc/audit/rules.d/audit.rules").exists
    lines = [x for x in rules.splitlines() if x and not x.startswith("#")]
    assert lines[-1] == "-e 2"
    # the exclusions come before any rule that could make such a record
    assert lines.index("-a always,exclude -F msgtype=EXECVE") < lines.index(
        "-w /etc/passwd -p wa -k identity"
    )
    assert "-a always,exclude -F msgtype=PROCTITLE" in lines
    keys = ("identity", "time-change", "kernel_modules", "mounts", "privileged")
    keys += ("fieldkit-policy", "logins", "session", "perm_mod", "access", "delete")
    for key in keys:
        assert f"-k {key}" in rules, key
    suid = host.run(r"find / -xdev -type f \( -perm -4000 -o -perm -2000 \) -print").stdout.split()
    assert suid
    for path in suid:
        assert f"-F path={path} -F perm=x" in rules, path
    for path in defaults["integrity_audit_policy_paths"]:
        assert f"-w {path} -p wa -k fieldkit-policy" in rules, path


def test_the_aide_baseline_is_the_finished_image(
    host: Any, rootfs: Path, manifest: dict[str, Any]
) -> None:
    """Issue 19 item 3: the pack step made AIDE's baseline after the last file was written
    (fstab), and the root file system, checked against it, has not changed since; the timer
    runs the check after each boot and daily."""
    database = rootfs / "var/lib/aide/aide.db"
    assert database.exists() and database.stat().st_mode & 0o077 == 0
    assert database.stat().st_mtime >= (rootfs / "etc/fstab").stat().st_mtime
    assert "integrity_baseline" in manifest["timings_seconds"]
    config = host.file("/etc/aide/aide.conf").content_string
    assert "Checksums = sha256+sha512" in config
    for path in _integrity_defaults()["integrity_aide_exclude"]:
        assert f"!{re.escape(path)}($|/)" in config, path
    timer = host.file("/etc/systemd/system/fieldkit-integrity-check.timer").content_string
    assert "OnBootSec=" in timer and "OnCalendar=daily" in timer
    assert host.service("fieldkit-integrity-check.timer").is_enabled
    check = host.run("aide --config /etc/aide/aide.conf --check")
    assert check.rc == 0, check.stdout[-3000:]


def test_the_integrity_reports_for_the_hub_are_made_by_root_units(host: Any) -> None:
    """Issue 19 items 2 and 3: the AIDE check and the kernel audit summary are root's units
    (the audit log is root's alone), with no network, writing into the reports folder whose
    group has sync's user as its one member; the summary's timer is enabled."""
    check = host.file("/etc/systemd/system/fieldkit-integrity-check.service").content_string
    assert "-m fieldkit integrity check --aide-config /etc/aide/aide.conf" in check
    assert "--out /var/lib/fieldkit/integrity/file-integrity.json" in check
    assert "ReadWritePaths=/var/lib/fieldkit/integrity" in check
    summary = host.file("/etc/systemd/system/fieldkit-audit-summary.service").content_string
    assert "-m fieldkit integrity audit-summary --state" in summary
    assert "PrivateNetwork=yes" in summary and "User=" not in summary
    assert "CapabilityBoundingSet=CAP_AUDIT_CONTROL CAP_CHOWN" in summary
    assert host.service("fieldkit-audit-summary.timer").is_enabled
    assert host.group("fieldkit-integrity").exists
    members = host.run("getent group fieldkit-integrity").stdout.strip().split(":")[-1]
    assert members == "fieldkit-sync", members
    assert host.exists("ausearch") and host.exists("auditctl")


def test_nothing_enabled_that_the_policy_does_not_name(rootfs: Path, policies: PolicySet) -> None:
    """Issue 19 item 4, in the rootfs (the booted VM's twin is test_image_hardening.py): every
    enabled unit is rendered from policies/ or named in services.yaml's system_units."""
    enabled = check_nothing_enabled_that_the_policy_does_not_name(rootfs, policies, "tablet")
    assert "fieldkit-audit-summary.timer" in enabled


def test_apparmor_is_on_and_every_profile_enforces(host: Any, policies: PolicySet) -> None:
    """Issue 19 item 1: AppArmor's user space loads the profiles at boot; the kernel command line
    keeps Debian's default (AppArmor on: no apparmor=0, no lsm= or security= without it); every
    profile the kit names is on disk with no complain flag, none disabled or forced to
    complain."""
    from fieldkit.apparmor import DEBIAN_PROFILES, render_apparmor

    options = yaml.safe_load((REPO / "image" / "tablet.yaml").read_text())["kernel_cmdline"]
    for option in options.split():
        assert option != "apparmor=0", options
        if option.startswith(("lsm=", "security=")):
            assert "apparmor" in option, options
    assert host.package("apparmor").is_installed
    assert host.service("apparmor").is_enabled
    files = [str(p) for p in render_apparmor(policies, "tablet") if "/local/" not in str(p)]
    files += [f"/etc/apparmor.d/{name}" for name in DEBIAN_PROFILES]
    for path in files:
        body = host.file(path).content_string
        assert re.search(
            r"^\s*(profile )?\S+( \S+)? flags=\(attach_disconnected\) \{", body, re.M
        ), path
        assert not re.search(r"flags=\([^)]*complain", body), path
        name = PurePosixPath(path).name
        for folder in ("disable", "force-complain"):
            assert not host.file(f"/etc/apparmor.d/{folder}/{name}").exists, (folder, name)
