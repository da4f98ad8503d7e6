"""The built tablet image, booted in QEMU: what comes up on the device (R12, R16, R23, R30).

Slow: boots the image from ``tests/test_image.py``'s build (or FIELDKIT_IMAGE_DIR's) under
OVMF, through the ESP's systemd-boot, on a qcow2 overlay (the image is never written), with no
network device. ``tests/support/image_boot.py`` documents how the report gets out of the VM.

Each check is a function of the report and of expectations rendered from ``policies/``;
``test_every_check_can_fail`` runs every check once more against a wrong expectation and
requires it to fail, so none of them passes vacuously.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml

from fieldkit.apparmor import CHROMIUM, MOSQUITTO, enforced_profiles, services_of
from fieldkit.policies import (
    NFTABLES_PATH,
    USBGUARD_RULES_PATH,
    PolicySet,
    apparmor_profile,
    load_policies,
    render,
    unit_name,
)
from fieldkit.registry import identities_for, specs_for_role
from tests.support.apparmor_boot import (
    TABLET_PROBE,
    check_apparmor_confined,
    check_apparmor_denies_and_logs,
    check_apparmor_enforcing,
    check_apparmor_no_denials,
    complain_as_enforced,
)
from tests.support.datavol_boot import (
    FIRST_BOOT,
    PURGE_BOOT,
    Canary,
    ScanResult,
    make_canary,
    raw_disk,
    scan,
)
from tests.support.image_boot import EXTRA_MARK, REPORT_SCRIPT, BootReport, boot

REPO = Path(__file__).resolve().parents[1]
BUILD_ROOT = Path("/var/tmp/fieldkit-build")
# The kiosk's compositor unit comes from the kiosk role, not from services.yaml: cage and
# Chromium on tty1 as the kiosk user. Chromium needs namespaces, sockets, the GPU and JIT
# memory, so it has its own exposure ceiling, above the services' (measured 2.4, booted).
KIOSK_BROWSER = "fieldkit-kiosk-browser.service"
KIOSK_MAX_EXPOSURE = 2.5
KIOSK_DEFAULTS = REPO / "ansible" / "roles" / "kiosk" / "defaults" / "main.yml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root"),
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86, ovmf"
    ),
    pytest.mark.skipif(shutil.which("swtpm") is None, reason="needs swtpm (the tablet's TPM)"),
]


@dataclass(frozen=True)
class Expected:
    """What the policies say the running tablet must show."""

    service_units: tuple[str, ...]
    # Per unit: the user it runs as and its exposure ceiling (services.yaml overrides).
    users: dict[str, str]
    ceilings: dict[str, float]
    nft_rules: tuple[tuple[str, str], ...]  # (rule name, "address port") pairs
    usbguard_rules: tuple[str, ...]
    tmpfs: tuple[tuple[str, str, str, str], ...]  # path, size option, mode, owner
    sysctl: tuple[tuple[str, str], ...]
    # The kiosk role's user, Chromium flags and start page (ansible/roles/kiosk/defaults).
    kiosk_user: str
    kiosk_flags: tuple[str, ...]
    kiosk_url: str
    # Issue 17: the identities with a bus password at boot (not the compliance run's audit),
    # the services' own users and their shared group.
    bus_identities: tuple[str, ...] = ()
    own_users: tuple[str, ...] = ()
    services_group: str = "fieldkit"
    # The users sharing the enrolment folder (the kiosk's and sync's: shared_groups).
    enrol_sharers: tuple[str, ...] = ()
    # Units without a private user namespace although not root's (the antivirus: it reads
    # the other users' areas with CAP_DAC_READ_SEARCH, which a user namespace would void).
    shared_userns: tuple[str, ...] = ()
    # Issue 19: the AppArmor profiles loaded in enforce mode, and each unit's profile.
    apparmor_profiles: tuple[str, ...] = ()
    apparmor_units: dict[str, str] = field(default_factory=dict)


def expected_from(policies: PolicySet) -> Expected:
    units = tuple(sorted(p.name for p in render(policies, "services", "tablet")))
    ruleset = render(policies, "network")[NFTABLES_PATH]
    rules = []
    for rule in policies.network.outbound:
        line = next(x for x in ruleset.splitlines() if f'comment "{rule.name}"' in x)
        # nft lists a one-element set without braces: "{ 192.0.2.10 }" reads "192.0.2.10".
        match = re.sub(r"\{ ([^,{}]+) \}", r"\1", line.split("accept")[0].strip())
        rules.append((rule.name, match))
    usb = render(policies, "usb")[USBGUARD_RULES_PATH]
    usb_rules = tuple(x for x in usb.splitlines() if x and not x.startswith("#"))
    tmpfs = tuple(
        (str(m.path), _size_option(m.size), m.mode.lstrip("0"), m.owner or "root")
        for m in policies.erasure.tmpfs
    )
    sysctl_file = next(
        body
        for path, body in render(policies, "erasure").items()
        if str(path).startswith("/etc/sysctl.d/")
    )
    sysctl = tuple(
        (key.strip(), value.strip())
        for key, _, value in (x.partition("=") for x in sysctl_file.splitlines())
        if key.strip() in ("kernel.core_pattern", "fs.suid_dumpable")
    )
    services = policies.services
    users, ceilings = {}, {}
    for unit in units:
        name = unit.removeprefix("fieldkit-").removesuffix(".service")
        users[unit] = services.user_of(name)
        ceilings[unit] = services.ceiling(name)
    kiosk = yaml.safe_load(KIOSK_DEFAULTS.read_text(encoding="utf-8"))
    return Expected(
        units,
        users,
        ceilings,
        tuple(rules),
        usb_rules,
        tmpfs,
        sysctl,
        kiosk["kiosk_user"],
        tuple(kiosk["kiosk_chromium_flags"]),
        kiosk["kiosk_url"],
        tuple(
            sorted(i.name for i in identities_for(specs_for_role("tablet")) if i.name != "audit")
        ),
        tuple(sorted(services.own_user_names())),
        services.user,
        tuple(services.shared_group_users().get("fieldkit-enrol", [])),
        tuple(
            sorted(
                path.name
                for path, body in render(policies, "services", "tablet").items()
                if "PrivateUsers=no" in body.splitlines() and "User=root" not in body
            )
        ),
        tuple(enforced_profiles(policies, "tablet")),
        {unit_name(n): apparmor_profile(n) for n in services_of(policies, "tablet")},
    )


def _size_option(size: str) -> str:
    number, unit = int(size[:-1]), size[-1].upper()
    return f"size={number * {'K': 1, 'M': 1024, 'G': 1024 * 1024}[unit]}k"


# --- the checks -------------------------------------------------------------------------


def check_system_running(report: BootReport, expected: Expected) -> None:
    """systemd reached its target with nothing failed, and the services settled."""
    assert report.lines("state") == ["running"], report.sections["state"]
    assert report.lines("failed") == [], report.sections["failed"]
    assert report.lines("settle")[:1] == ["settled"], report.sections["settle"]
    root = next(x for x in report.lines("mounts") if x.split()[1] == "/")
    assert root.split()[0] == "/dev/vda2", root  # the initrd found the root by PARTUUID


def _units(report: BootReport) -> dict[str, dict[str, str]]:
    found = {}
    for block in report.sections["fieldkit-show"].split("\n\n"):
        props = dict(x.split("=", 1) for x in block.splitlines() if "=" in x)
        if props:
            found[props["Id"]] = props
    return found


def check_fieldkit_units(report: BootReport, expected: Expected) -> None:
    """Every policy-rendered unit is enabled; it runs sandboxed, or waits for enrolment."""
    units = _units(report)
    enrolled = report.lines("device-config") == ["present"]
    ratings = dict(
        re.findall(r"Overall exposure level for (\S+): ([0-9.]+)", report.sections["security"])
    )
    for name in expected.service_units:
        unit = units.get(name)
        assert unit is not None, f"{name} is not loaded"
        assert unit["UnitFileState"] == "enabled", unit
        if enrolled or unit["ActiveState"] != "inactive":
            assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit
            assert unit["NRestarts"] == "0", unit
        else:
            # The one allowed reason not to run: ConditionPathExists on the device config.
            assert unit["ConditionResult"] == "no" and unit["Result"] == "success", unit
        assert unit["User"] == expected.users[name], unit
        assert unit["ProtectSystem"] == "strict", unit
        if expected.users[name] != "root":
            private = "no" if name in expected.shared_userns else "yes"
            assert unit["PrivateUsers"] == private, unit
        assert float(ratings[name]) <= expected.ceilings[name], (name, ratings[name])


def check_kiosk(report: BootReport, expected: Expected) -> None:
    """cage runs on the kiosk's display with Chromium as its child: kiosk user, role's flags."""
    assert report.lines("settle")[1:] == ["chromium"], report.sections["settle"]
    unit = _units(report)[KIOSK_BROWSER]
    assert (unit["ActiveState"], unit["SubState"], unit["NRestarts"]) == (
        "active",
        "running",
        "0",
    ), unit
    assert unit["User"] == expected.kiosk_user, unit
    assert (unit["NoNewPrivileges"], unit["ProtectSystem"]) == ("yes", "strict"), unit
    ratings = dict(
        re.findall(r"Overall exposure level for (\S+): ([0-9.]+)", report.sections["security"])
    )
    assert float(ratings[KIOSK_BROWSER]) <= KIOSK_MAX_EXPOSURE, ratings[KIOSK_BROWSER]
    cages = report.lines("kiosk")
    assert len(cages) == 1, cages  # exactly one compositor
    cage_pid, cage_user, cage_args = cages[0].split(None, 2)
    assert (cage_user, cage_args.split()[0]) == (expected.kiosk_user, "/usr/bin/cage"), cages
    # ps --ppid <cage>: pid, ppid, user, comm, args. The Debian wrapper /usr/bin/chromium
    # execs /usr/lib/chromium/chromium, so the browser itself is cage's direct child.
    children = [x.split(None, 4) for x in report.lines("kiosk-children")]
    browsers = [
        c[4].split()
        for c in children
        if len(c) == 5 and c[1] == cage_pid and c[2] == expected.kiosk_user and c[3] == "chromium"
    ]
    assert browsers, report.sections["kiosk-children"]
    argv = browsers[0]
    missing = [flag for flag in expected.kiosk_flags if flag not in argv]
    # Chromium rewrites its command line (switches and arguments reordered): look, not count.
    assert not missing and expected.kiosk_url in argv[1:], (missing, argv)
    assert "--no-sandbox" not in argv, argv


def check_firewall(report: BootReport, expected: Expected) -> None:
    """The loaded ruleset drops by default on all three hooks and allows only the policy."""
    ruleset = report.sections["nft"]
    hooks = re.findall(r"type filter hook (\w+) priority filter; policy (\w+);", ruleset)
    assert sorted(hooks) == [("forward", "drop"), ("input", "drop"), ("output", "drop")], hooks
    loaded = {
        m.group(2): m.group(1).strip()
        for m in re.finditer(r"^\s*(.+?) accept comment \"([^\"]+)\"$", ruleset, re.M)
    }
    for name, match in expected.nft_rules:
        assert loaded.get(name) == match, (name, loaded.get(name), match)


def check_usbguard(report: BootReport, expected: Expected) -> None:
    """USBGuard runs with exactly the policy's rules, in order."""
    status, *rules = report.lines("usbguard")
    assert status == "active"
    assert [re.sub(r"^\d+: ", "", x) for x in rules] == list(expected.usbguard_rules), rules


def check_usb_devices(report: BootReport, expected: Expected) -> None:
    """R23: the memory stick QEMU plugs in is blocked and gives no disk; the keyboard (HID)
    is allowed. (No USB camera can be emulated: the camera class is held by the rules only.)"""
    devices = report.lines("usb-devices")
    stick = [d for d in devices if "with-interface 08:" in d]
    keyboard = [d for d in devices if "with-interface 03:01:01" in d]
    assert stick and all(re.match(r"^\d+: block ", d) for d in stick), devices
    assert keyboard and all(re.match(r"^\d+: allow ", d) for d in keyboard), devices
    assert report.lines("usb-disks") == ["none"], report.sections["usb-disks"]


def check_tmpfs(report: BootReport, expected: Expected) -> None:
    """Every erasure-policy path is a tmpfs of its size, mode and owner."""
    mounts = {x.split()[1]: x.split()[3].split(",") for x in report.lines("mounts")}
    owners = {x.split()[2]: x.split()[:2] for x in report.lines("tmpfs-owners")}
    for path, size, mode, owner in expected.tmpfs:
        assert path in mounts and path in owners, f"{path} is not a tmpfs"
        assert size in mounts[path], (path, mounts[path])
        assert owners[path] == [owner, mode], (path, owners[path])


def check_nothing_persists(report: BootReport, expected: Expected) -> None:
    """No swap, the journal in /run only, core dumps off."""
    assert len(report.lines("swaps")) == 1, report.sections["swaps"]  # the header only
    journals = report.lines("journal-files")
    assert journals and all(x.startswith("/run/log/journal/") for x in journals), journals
    live = tuple(tuple(p.strip() for p in x.split("=", 1)) for x in report.lines("sysctl"))
    assert live == expected.sysctl, live


def check_bus_credentials(report: BootReport, expected: Expected) -> None:
    """Issue 17: the bus passwords are root's alone; each running service was handed only its
    own by systemd; the audit identity has no password outside a compliance run; each service
    with a user of its own reads the device config but no password and not the kiosk's state."""
    lines = report.lines("bus-credentials")
    files = [x.split(None, 3)[1:] for x in lines if x.startswith("file ")]
    assert files and files[0] == ["root", "700", "/run/fieldkit/credentials"], files
    assert sorted(f[2].rsplit("/", 1)[1] for f in files[1:]) == list(expected.bus_identities)
    assert all(f[:2] == ["root", "400"] for f in files[1:]), files
    (passwd,) = [x.split()[1:] for x in lines if x.startswith("passwd ")]
    assert tuple(passwd) == expected.bus_identities, passwd
    handed = {}
    for x in lines:
        if x.startswith("unit "):
            _, unit, name = x.split()
            handed.setdefault(unit, []).append(name)
    running = [
        u
        for u, props in _units(report).items()
        if u in expected.service_units and props["ActiveState"] == "active"
    ]
    assert running, "no fieldkit service runs"
    for unit in running:
        name = unit.removeprefix("fieldkit-").removesuffix(".service")
        assert handed.get(unit) == [f"bus-{name}"], (unit, handed.get(unit))
    users = {x.split()[1]: x.split()[2] for x in lines if x.startswith("user ")}
    assert tuple(sorted(users)) == expected.own_users, users
    assert set(users.values()) <= {expected.services_group}, users
    for user in expected.own_users:
        assert f"reads {user} /etc/fieldkit/device.toml" in lines, lines
        assert f"denied {user} /run/fieldkit/credentials/kiosk" in lines, lines
        assert f"denied {user} /var/lib/fieldkit/audit" in lines, lines
        # The enrolment folder (the device's keys, the roster) is the kiosk's and sync's.
        verdict = "reads" if user in expected.enrol_sharers else "denied"
        assert f"{verdict} {user} /var/lib/fieldkit/enrol" in lines, lines
    assert "fieldkit-sync" in expected.enrol_sharers, expected.enrol_sharers
    assert f"group fieldkit-enrol {','.join(sorted(expected.enrol_sharers))}" in lines, lines
    assert "enrol fieldkit fieldkit-enrol 2771" in lines, lines


# Issue 19 item 1: AppArmor (tests/support/apparmor_boot.py runs the sections).
# The programs beside the services, by command name, and the profile each must run in.
APPARMOR_PROGRAMS = {
    "mosquitto": MOSQUITTO,
    "chromium": CHROMIUM,
    "cupsd": "/usr/sbin/cupsd",
    "freshclam": "/usr/bin/freshclam",
}


def check_apparmor(report: BootReport, expected: Expected) -> None:
    """Every profile the kit names is loaded, enforced (the services', Chromium's, mosquitto's,
    Debian's cupsd and freshclam)."""
    check_apparmor_enforcing(report, expected.apparmor_profiles)


def check_apparmor_processes(report: BootReport, expected: Expected) -> None:
    """Every process of every fieldkit unit in its unit's profile; Chromium, mosquitto, cupsd
    and freshclam in theirs."""
    check_apparmor_confined(report, expected.apparmor_units, APPARMOR_PROGRAMS)


def check_apparmor_quiet(report: BootReport, expected: Expected) -> None:
    """Nothing the booted tablet does is refused: no DENIED line before the probe."""
    check_apparmor_no_denials(report)


def check_apparmor_refusal(report: BootReport, expected: Expected) -> None:
    """sync's profile refuses the kiosk's audit folder, logged DENIED; sync keeps running."""
    check_apparmor_denies_and_logs(report, TABLET_PROBE)


CHECKS: list[Callable[[BootReport, Expected], None]] = [
    check_system_running,
    check_fieldkit_units,
    check_kiosk,
    check_firewall,
    check_usbguard,
    check_usb_devices,
    check_tmpfs,
    check_nothing_persists,
    check_bus_credentials,
    check_apparmor,
    check_apparmor_processes,
    check_apparmor_quiet,
    check_apparmor_refusal,
]


# --- fixtures and tests -----------------------------------------------------------------


@pytest.fixture(scope="module")
def expected() -> Expected:
    return expected_from(load_policies(REPO / "policies"))


# The device's disk is larger than the image written to it: the data volume grows into it.
GROW_MIB = 512
# Under TCG on a loaded 2-core machine a boot took 380 s (the first boot formats the volume).
BOOT_TIMEOUT = 1200.0


@pytest.fixture(scope="module")
def work() -> Path:
    return Path(os.environ.get("FIELDKIT_BOOT_WORK", BUILD_ROOT / "boot-test" / "tablet"))


@pytest.fixture(scope="module")
def canary(work: Path) -> Canary:
    return make_canary(work / "canary")


@pytest.fixture(scope="module")
def report(tablet_image_dir: Path, work: Path, canary: Canary) -> BootReport:
    """The first boot, with a TPM: the standard report, the data volume, the canary written."""
    found = boot(
        tablet_image_dir,
        "tablet",
        work,
        script=REPORT_SCRIPT.replace(EXTRA_MARK, FIRST_BOOT),
        files=canary.files,
        tpm=work / "tpm",
        grow_mib=GROW_MIB,
        # A host shared with other VMs may need longer (FIELDKIT_BOOT_TIMEOUT, seconds).
        timeout=float(os.environ.get("FIELDKIT_BOOT_TIMEOUT", BOOT_TIMEOUT)),
    )
    shutil.copyfile(work / "report.log", work / "report-first-boot.log")
    print(f"\nboot: {found.accelerator}, VM ran {found.seconds} s; {'; '.join(found.notes)}")
    print("\n".join(found.lines("boot-time")))
    return found


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_booted_tablet(report: BootReport, expected: Expected, check: Callable[..., None]) -> None:
    check(report, expected)


WRONG: dict[str, Callable[[Expected], Expected]] = {
    "system_running": lambda e: replace(e),  # paired with a report claiming a failed unit
    "fieldkit_units": lambda e: replace(e, ceilings=dict.fromkeys(e.ceilings, 0.1)),
    "kiosk": lambda e: replace(e, kiosk_flags=(*e.kiosk_flags, "--incognito")),
    "firewall": lambda e: replace(e, nft_rules=(*e.nft_rules, ("dns", "ip daddr 1.1.1.1"))),
    "usbguard": lambda e: replace(e, usbguard_rules=e.usbguard_rules[::-1]),
    "usb_devices": lambda e: replace(e),  # paired with a report where the stick got through
    "tmpfs": lambda e: replace(e, tmpfs=(*e.tmpfs, ("/var/log", "size=1024k", "755", "root"))),
    "nothing_persists": lambda e: replace(e, sysctl=(("kernel.core_pattern", "core"),)),
    # the audit identity standing at boot, as it did before issue 17
    "bus_credentials": lambda e: replace(
        e, bus_identities=tuple(sorted((*e.bus_identities, "audit")))
    ),
    # a profile the kit needs that is not loaded (or only in complain mode: see below)
    "apparmor": lambda e: replace(e, apparmor_profiles=(*e.apparmor_profiles, "fieldkit-absent")),
    # capture's processes expected in sync's profile
    "apparmor_processes": lambda e: replace(
        e, apparmor_units=e.apparmor_units | {"fieldkit-capture.service": "fieldkit-sync"}
    ),
    "apparmor_quiet": lambda e: replace(e),  # paired with a report with a DENIED line
    "apparmor_refusal": lambda e: replace(e),  # paired with the complain-mode run's sections
}


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_every_check_can_fail(
    report: BootReport, expected: Expected, check: Callable[..., None]
) -> None:
    """The same report against a wrong expectation (or a report edited to a fault) fails."""
    name = check.__name__.removeprefix("check_")
    sections = dict(report.sections)
    if name == "system_running":
        sections["failed"] = "fieldkit-capture.service loaded failed failed fieldkit capture"
    if name == "apparmor_quiet":
        sections["apparmor-denials"] = 'apparmor="DENIED" operation="open" (a refusal)'
    if name == "apparmor_refusal":
        # The profile in complain mode: the same access let through, logged ALLOWED.
        sections = complain_as_enforced(report)
    if name == "usb_devices":
        # The stick let through: USBGuard allowed it and the kernel made a disk of it.
        sections["usb-devices"] = sections["usb-devices"].replace(": block ", ": allow ")
        sections["usb-disks"] = "sda usb"
    broken = replace(report, sections=sections)
    with pytest.raises(AssertionError):
        check(broken, WRONG[name](expected))


def _kiosk_unit_edited(report: BootReport, key: str, value: str) -> str:
    """The fieldkit-show section with one property of the kiosk browser unit changed."""
    blocks = report.sections["fieldkit-show"].split("\n\n")
    for i, block in enumerate(blocks):
        if f"Id={KIOSK_BROWSER}" in block.splitlines():
            blocks[i] = re.sub(rf"^{key}=.*$", f"{key}={value}", block, flags=re.M)
    return "\n\n".join(blocks)


def _kiosk_faults(report: BootReport) -> dict[str, dict[str, str]]:
    """The booted report's kiosk sections, each edited to one fault the check must see."""
    children = report.sections["kiosk-children"]
    cage_pid = report.lines("kiosk")[0].split()[0]
    return {
        "no chromium in time": {"settle": "settled\nno chromium"},
        "browser not started": {"kiosk-children": ""},
        "browser as root": {"kiosk-children": children.replace(" kiosk ", " root ")},
        "browser not cage's child": {"kiosk-children": children.replace(f" {cage_pid} ", " 1 ")},
        "browser without --kiosk": {"kiosk-children": children.replace(" --kiosk", " ")},
        "browser elsewhere": {"kiosk-children": children.replace(" http://", " about:blank#")},
        "browser unsandboxed": {
            "kiosk-children": children.replace(" --kiosk", " --kiosk --no-sandbox")
        },
        "unit restarted": {"fieldkit-show": _kiosk_unit_edited(report, "NRestarts", "3")},
        "unit unsandboxed": {"fieldkit-show": _kiosk_unit_edited(report, "NoNewPrivileges", "no")},
        "exposure above ceiling": {
            "security": re.sub(
                rf"(exposure level for {re.escape(KIOSK_BROWSER)}): [0-9.]+",
                r"\1: 9.2",
                report.sections["security"],
            )
        },
        "two compositors": {"kiosk": "\n".join([report.sections["kiosk"]] * 2)},
    }


@pytest.mark.parametrize(
    "fault",
    [
        "no chromium in time",
        "browser not started",
        "browser as root",
        "browser not cage's child",
        "browser without --kiosk",
        "browser elsewhere",
        "browser unsandboxed",
        "unit restarted",
        "unit unsandboxed",
        "exposure above ceiling",
        "two compositors",
    ],
)
def test_kiosk_check_sees_each_fault(report: BootReport, expected: Expected, fault: str) -> None:
    """The kiosk check passes on the booted report only because each of its facts holds."""
    edits = _kiosk_faults(report)[fault]
    broken = replace(report, sections=dict(report.sections) | edits)
    with pytest.raises(AssertionError):
        check_kiosk(broken, expected)


# --- the encrypted data volume (R12, R24): first boot, reboot, purge, the disk scanned ----


def _scan_disk(work: Path, canary: Canary, when: str) -> ScanResult:
    raw = work / f"disk-{when}.raw"
    seconds = raw_disk(work / "overlay.qcow2", raw)
    try:
        found = scan(raw, canary.needles)
    finally:
        raw.unlink()
    found.convert_seconds = seconds
    print(
        f"\ndisk scan {when}: {found.disk_bytes} bytes, {found.bytes_scanned} allocated "
        f"scanned; convert {seconds} s, scan {found.scan_seconds} s"
    )
    return found


@pytest.fixture(scope="module")
def scan_before_purge(report: BootReport, work: Path, canary: Canary) -> ScanResult:
    """The disk after the first boot wrote the canary onto the volume: encrypted at rest."""
    return _scan_disk(work, canary, "before-purge")


@pytest.fixture(scope="module")
def purge_report(
    report: BootReport,
    scan_before_purge: ScanResult,
    tablet_image_dir: Path,
    work: Path,
) -> BootReport:
    """The same device booted again: the volume reopened by the TPM, then purged."""
    config = work / "handover" / "device.toml"
    config.parent.mkdir(parents=True, exist_ok=True)  # a fresh work folder has none
    config.write_text('[device]\nid = "vm-tablet-01"\nrole = "tablet"\nsite = "QEMU"\n')
    found = boot(
        tablet_image_dir,
        "tablet",
        work,
        script=PURGE_BOOT,
        files={"device.toml": config},
        tpm=work / "tpm",
        again=True,
        timeout=BOOT_TIMEOUT,
    )
    shutil.copyfile(work / "report.log", work / "report-purge-boot.log")
    print(f"\nsecond boot and purge: VM ran {found.seconds} s; wipe: {found.lines('wipe')[-1:]}")
    return found


@pytest.fixture(scope="module")
def disk_scan(purge_report: BootReport, work: Path, canary: Canary) -> ScanResult:
    return _scan_disk(work, canary, "after-purge")


def _props(report: BootReport, section: str) -> dict[str, dict[str, str]]:
    units: dict[str, dict[str, str]] = {}
    for block in report.sections[section].split("\n\n"):
        props = dict(x.split("=", 1) for x in block.splitlines() if "=" in x)
        if props:
            units[props["Id"]] = props
    return units


def _volume_up(report: BootReport) -> None:
    assert report.lines("datavol-wait") == ["mounted"], report.sections["datavol-unlock-log"]
    units = _props(report, "datavol-units")
    assert len(units) == 4, units
    for unit in units.values():
        assert (unit["ActiveState"], unit["Result"]) == ("active", "success"), unit
    target, source, fstype = report.lines("datavol-mount")[0].split()
    assert (target, source, fstype) == ("/var/lib/fieldkit", "/dev/mapper/fieldkit-data", "ext4")


def expected_volume_paths(listed: set[str]) -> dict[str, list[str]]:
    """What the report's ``datavol-paths`` should say of each folder (or link to one) it lists,
    from the erasure policy: on the volume's mount, the policy's owner and mode (the values
    were written out here once and went stale when the policy gave sync its outbox and the
    enrolment folder its setgid group)."""
    volume = load_policies(REPO / "policies").erasure.data_volume
    assert volume is not None
    folders = {str(d.path): d for d in volume.directories}
    links = {str(link): str(target) for link, target in volume.links.items()}
    expected = {}
    for path in sorted(listed):
        folder = folders[links.get(path, path)]
        expected[path] = [str(volume.mount), folder.owner or "root", folder.mode.lstrip("0")]
    assert len(expected) >= 5
    return expected


def test_first_boot_makes_the_volume_and_the_tpm_opens_it(report: BootReport) -> None:
    """LUKS2, made on this boot, one keyslot, held by the TPM (PCR 7): no passphrase exists."""
    _volume_up(report)
    assert any("LUKS2 volume made" in x for x in report.lines("datavol-format-log"))
    dump = report.sections["datavol-luks"]
    assert re.search(r"^Version:\s+2$", dump, re.M), dump
    keyslots = re.findall(r"^\s+(\d+): luks2$", dump.split("Tokens:")[0], re.M)
    assert keyslots == ["1"], dump  # the random first key's slot 0 is gone
    tokens = dump.split("Tokens:")[1].split("Digests:")[0]
    assert "systemd-tpm2" in tokens and re.search(r"Keyslot:\s+1", tokens), tokens
    assert re.search(r"tpm2-(hash-)?pcrs:\s+7\b", tokens), tokens  # 252 prints "hash-pcrs"
    assert "type:    LUKS2" in report.sections["datavol-status"]
    # Every persistent state folder is on the volume (the keys through their symlinks).
    paths = {x.split()[0]: x.split()[1:] for x in report.lines("datavol-paths")}
    assert paths == expected_volume_paths(set(paths)), paths
    # The placeholder partition grew into the larger disk.
    vda3 = next(x.split() for x in report.lines("datavol-disk") if "fieldkit-data" in x)
    assert int(vda3[1]) > (256 + GROW_MIB - 8) << 20, vda3
    assert len(report.lines("canary-write")) == 3


def test_a_reboot_reopens_the_volume_with_the_tpm(
    report: BootReport, purge_report: BootReport
) -> None:
    assert purge_report.lines("state") == ["running"], purge_report.sections["state"]
    _volume_up(purge_report)
    assert any("holds the LUKS2 volume" in x for x in purge_report.lines("datavol-format-log"))
    assert purge_report.lines("canary-read") == report.lines("canary-write")  # same sha256s
    # The spool is memory-only: cupsd made its tmp/ again, the canary is gone.
    assert not [x for x in purge_report.lines("spool-after-reboot") if "canary" in x]


def test_the_canary_is_encrypted_at_rest_before_the_purge(
    report: BootReport, scan_before_purge: ScanResult
) -> None:
    """After the first boot the canary is on the volume (read back after the reboot), yet the
    raw disk holds it in no encoding; the scan does see the volume's two LUKS2 headers."""
    assert len(report.lines("canary-write")) == 3
    assert scan_before_purge.found == {name: [] for name in scan_before_purge.found}
    assert len(scan_before_purge.luks_aligned) == 2, scan_before_purge.luks_aligned
    primary, secondary = scan_before_purge.luks_aligned
    assert secondary - primary == 16 << 10  # LUKS2's second header copy


def test_wipe_device_purges_the_volume_and_certifies_it(
    purge_report: BootReport,
) -> None:
    """R24: the purge's certificate is signed with the device's own key (the one its wipe
    service signs its erasure records with) and closes the chain of those records."""
    from fieldkit.wipe.sanitize import Certificate, verify_certificate

    wipe = purge_report.sections["wipe"]
    assert "exit 0" in wipe and "PASS" in wipe, wipe
    text = purge_report.sections["certificate"]
    (signer,) = purge_report.lines("signer")
    assert verify_certificate(text, signer) == []
    certificate = Certificate.model_validate_json(text)
    assert certificate.result == "pass" and certificate.method.category == "Purge"
    assert "TPM-sealed key" in certificate.method.technique
    steps = "\n".join(certificate.method.steps)
    for done in (
        "services stopped",
        "released:",
        "LUKS2 token 0 (systemd-tpm2",
        "keyslots destr",
        "LUKS2 header area",
        "overwrite: one pass",
    ):
        assert done in steps, steps  # fmt: skip
    assert certificate.verification.luks_headers_left == 0
    assert certificate.verification.keyslots_left == 0
    # The unenrolled tablet's wipe service ran at both boots: its records, one chain, intact.
    chain = certificate.evidence_chain
    assert chain is not None and chain.records >= 1 and chain.intact, chain
    assert purge_report.lines("after")[:2] == ["no LUKS", "not mounted"]


def test_the_disk_holds_no_canary_and_no_luks_header(disk_scan: ScanResult) -> None:
    """The raw disk after the purge, every allocated byte: no canary in any encoding, no
    LUKS header at any sector."""
    assert disk_scan.bytes_scanned > 1 << 30
    assert disk_scan.found == {name: [] for name in disk_scan.found}
    assert disk_scan.luks_aligned == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path, canary: Canary) -> None:
    """The same scan on a disk with the canary and a LUKS header planted finds each."""
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(5 << 20)
        handle.write(canary.needles["ascii"] + b"." + canary.needles["utf-16le"])
        handle.seek((16 << 20) - 3)  # across a chunk boundary
        handle.write(canary.jpeg)
        handle.seek(40 << 20)
        handle.write(b"SKUL\xba\xbe")
    found = scan(disk, canary.needles, chunk=1 << 20)
    assert all(found.found[name] for name in canary.needles), found.found
    assert found.luks_aligned == [40 << 20]
