"""The built tablet image, booted in QEMU: what comes up on the device (R12, R16, R23, R30).

Slow: boots the image from ``tests/test_image.py``'s build (or FIELDKIT_IMAGE_DIR's) under
OVMF, through the ESP's systemd-boot, on a qcow2 overlay (the image is never written), with no
network device. ``fieldkit.image_boot`` documents how the report gets out of the VM.

Each check is a function of the report and of expectations rendered from ``policies/``;
``test_every_check_can_fail`` runs every check once more against a wrong expectation and
requires it to fail, so none of them passes vacuously.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fieldkit.image_boot import BootReport, boot
from fieldkit.policies import (
    NFTABLES_PATH,
    USBGUARD_RULES_PATH,
    PolicySet,
    load_policies,
    render,
)

REPO = Path(__file__).resolve().parents[1]
BUILD_ROOT = Path("/var/tmp/fieldkit-build")
# The kiosk's compositor unit comes from the kiosk role, not from services.yaml: it is a login
# session on tty1 (PAMName=login) and is not held to the services' exposure ceiling.
KIOSK_BROWSER = "fieldkit-kiosk-browser.service"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root"),
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86, ovmf"
    ),
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
        override = services.overrides.get(name)
        users[unit] = override.user if override and override.user else services.user
        ceilings[unit] = services.ceiling(name)
    return Expected(units, users, ceilings, tuple(rules), usb_rules, tmpfs, sysctl)


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
            assert unit["PrivateUsers"] == "yes", unit
        assert float(ratings[name]) <= expected.ceilings[name], (name, ratings[name])


def check_kiosk(report: BootReport, expected: Expected) -> None:
    """cage runs Chromium on the kiosk's display."""
    assert report.lines("settle")[1:] == ["chromium"], report.sections["settle"]
    unit = _units(report)[KIOSK_BROWSER]
    assert (unit["ActiveState"], unit["SubState"], unit["NRestarts"]) == (
        "active",
        "running",
        "0",
    ), unit
    cage, chromium, *_ = report.lines("kiosk")
    assert "/usr/bin/cage" in cage and "--kiosk" in cage, cage
    assert "chromium" in chromium, chromium


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


CHECKS: list[Callable[[BootReport, Expected], None]] = [
    check_system_running,
    check_fieldkit_units,
    check_kiosk,
    check_firewall,
    check_usbguard,
    check_tmpfs,
    check_nothing_persists,
]


# --- fixtures and tests -----------------------------------------------------------------


@pytest.fixture(scope="module")
def expected() -> Expected:
    return expected_from(load_policies(REPO / "policies"))


@pytest.fixture(scope="module")
def report(tablet_image_dir: Path) -> BootReport:
    found = boot(tablet_image_dir, "tablet", BUILD_ROOT / "boot-test" / "tablet")
    print(f"\nboot: {found.accelerator}, VM ran {found.seconds} s; {'; '.join(found.notes)}")
    print("\n".join(found.lines("boot-time")))
    return found


# Open defect, not a waiver: in the VM cage starts (virtio-vga, no error logged) but never
# spawns Chromium. strict: once Chromium runs, this XPASSes and fails until the mark goes.
KIOSK_OPEN = pytest.mark.xfail(
    strict=True, reason="cage runs but starts no Chromium in the VM; not diagnosed yet"
)


@pytest.mark.parametrize(
    "check",
    [pytest.param(c, marks=KIOSK_OPEN) if c is check_kiosk else c for c in CHECKS],
    ids=lambda c: c.__name__.removeprefix("check_"),
)
def test_booted_tablet(report: BootReport, expected: Expected, check: Callable[..., None]) -> None:
    check(report, expected)


WRONG: dict[str, Callable[[Expected], Expected]] = {
    "system_running": lambda e: replace(e),  # paired with a report claiming a failed unit
    "fieldkit_units": lambda e: replace(e, ceilings=dict.fromkeys(e.ceilings, 0.1)),
    "kiosk": lambda e: e,  # paired with a report where chromium is missing
    "firewall": lambda e: replace(e, nft_rules=(*e.nft_rules, ("dns", "ip daddr 1.1.1.1"))),
    "usbguard": lambda e: replace(e, usbguard_rules=e.usbguard_rules[::-1]),
    "tmpfs": lambda e: replace(e, tmpfs=(*e.tmpfs, ("/var/log", "size=1024k", "755", "root"))),
    "nothing_persists": lambda e: replace(e, sysctl=(("kernel.core_pattern", "core"),)),
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
    if name == "kiosk":
        sections["kiosk"] = sections["kiosk"].replace("chromium", "missing")
        sections["settle"] = "settled\nno chromium"
    broken = replace(report, sections=sections)
    with pytest.raises(AssertionError):
        check(broken, WRONG[name](expected))
