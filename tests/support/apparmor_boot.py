"""AppArmor in a booted image (issue 19 item 1): the report's sections and the checks on them.

The sections run inside the booted tablet's and hub's report scripts (tests/support/image_boot.py,
tests/support/hub_boot.py), once per boot:

- ``apparmor-kernel``: the LSM is on and apparmor.service loaded the profiles;
- ``apparmor-profiles``: every loaded profile and its mode (the kernel's own list);
- ``apparmor-confined``: every process of every fieldkit unit, of mosquitto, cupsd, freshclam
  and the kiosk browser, with its label (``/proc/PID/attr/current``);
- ``apparmor-denials``: every DENIED line of the boot so far (nothing the kit does may be);
- ``apparmor-probe``: inside one service's profile, its own folder listed, and another
  service's folder refused; ``apparmor-probe-log``: the DENIED line that refusal left;
  ``apparmor-probe-unit``: the service itself still active (running);
- ``apparmor-complain-probe`` and ``-log``: the same profile loaded in complain mode under
  another name lets the same access through (logged ALLOWED): what the checks must catch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.image_boot import BootReport

# The audit trail's places: auditd's log on a tablet (the data volume), Debian's default on a
# hub, and the kernel's log when no auditd runs.
AUDIT_LOGS = "/var/lib/fieldkit/kernel-audit/audit.log /var/log/audit/audit.log"
VENV_PYTHON = "/opt/fieldkit/venv/bin/python"


@dataclass(frozen=True)
class Probe:
    """One service's profile, a folder of its own and another service's folder, and the Unix
    users that own each: the probe lists each folder as its owner (so the file permissions
    let it), inside the service's profile, so only AppArmor can refuse. (As root it would be
    refused by the profile's missing DAC capabilities before the folder's rule: the second
    tablet boot showed both listings refused that way, with no DENIED line naming the folder.)"""

    profile: str
    unit: str
    own: str
    other: str
    own_user: str
    other_user: str


# The tablet: sync's profile may list its outbox, not the kiosk's audit trail.
TABLET_PROBE = Probe(
    "fieldkit-sync",
    "fieldkit-sync.service",
    "/var/lib/fieldkit/outbox",
    "/var/lib/fieldkit/audit",
    "fieldkit-sync",
    "fieldkit",
)
# The hub: the CA signer's profile may list its PKI, not the rest of the hub's state.
HUB_PROBE = Probe(
    "fieldkit-ca-signer",
    "fieldkit-ca-signer.service",
    "/var/lib/fieldkit/pki",
    "/var/lib/fieldkit",
    "fieldkit",
    "fieldkit",
)


def sections(probe: Probe, units: str = "fieldkit-*.service") -> str:
    """The report script's AppArmor sections (shell; needs SCRIPT_HEAD's helpers)."""
    return rf"""section apparmor-kernel
echo "enabled $(cat /sys/module/apparmor/parameters/enabled 2>&1)"
echo "lsm $(cat /sys/kernel/security/lsm 2>&1)"
echo "service $(systemctl is-active apparmor.service)"
section apparmor-profiles
cat /sys/kernel/security/apparmor/profiles
section apparmor-denials
{{ cat {AUDIT_LOGS} 2>/dev/null; journalctl -k -b -o cat --no-pager -q; }} \
    | grep 'apparmor="DENIED"' | sed 's/^.*apparmor=/apparmor=/' | sort | uniq -c | head -n 60
section apparmor-confined
# (the kiosk browser's unit is among fieldkit-*: cage, unconfined, and Chromium, confined)
for unit in $(units '{units}') mosquitto.service cups.service clamav-freshclam.service; do
    cg=$(systemctl show -P ControlGroup "$unit")
    [ -n "$cg" ] && [ -d "/sys/fs/cgroup$cg" ] || continue
    for pid in $(find "/sys/fs/cgroup$cg" -name cgroup.procs -exec cat {{}} + 2>/dev/null); do
        label=$(cat "/proc/$pid/attr/apparmor/current" 2>/dev/null \
            || cat "/proc/$pid/attr/current" 2>/dev/null)
        [ -n "$label" ] && echo "$unit $pid $(cat /proc/$pid/comm 2>/dev/null) $label"
    done
done
section apparmor-probe
aa_probe() {{
    runuser -u "$3" -- aa-exec -p "$1" -- {VENV_PYTHON} -c 'import os, sys
try:
    os.listdir(sys.argv[1])
    print("allowed")
except OSError as exc:
    print("refused", exc.errno)' "$2" 2>&1 | tail -n 1
}}
echo "own $(aa_probe {probe.profile} {probe.own} {probe.own_user})"
echo "other $(aa_probe {probe.profile} {probe.other} {probe.other_user})"
sleep 3
section apparmor-probe-log
{{ cat {AUDIT_LOGS} 2>/dev/null; journalctl -k -b -o cat --no-pager -q; }} \
    | grep 'profile="{probe.profile}"' | grep -F 'name="{probe.other}/"' \
    | sed 's/^.*apparmor=/apparmor=/' | sort -u | head -n 5
section apparmor-probe-unit
systemctl show --no-pager -p Id,ActiveState,SubState,NRestarts {probe.unit}
section apparmor-complain-probe
# The off-case: the same profile in complain mode, under a name of its own, then unloaded.
sed -e 's/^profile {probe.profile} /profile {probe.profile}-complain /' \
    -e 's/flags=(attach_disconnected)/flags=(attach_disconnected, complain)/' \
    /etc/apparmor.d/{probe.profile} > /run/{probe.profile}-complain
apparmor_parser -a /run/{probe.profile}-complain && echo loaded
grep '^{probe.profile}-complain ' /sys/kernel/security/apparmor/profiles
echo "own $(aa_probe {probe.profile}-complain {probe.own} {probe.own_user})"
echo "other $(aa_probe {probe.profile}-complain {probe.other} {probe.other_user})"
sleep 3
section apparmor-complain-probe-log
{{ cat {AUDIT_LOGS} 2>/dev/null; journalctl -k -b -o cat --no-pager -q; }} \
    | grep 'profile="{probe.profile}-complain"' | grep -F 'name="{probe.other}/"' \
    | sed 's/^.*apparmor=/apparmor=/' | sort -u | head -n 5
apparmor_parser -R /run/{probe.profile}-complain >/dev/null 2>&1
"""


def loaded_profiles(report: BootReport) -> dict[str, str]:
    """Profile name -> mode, from the kernel's list (``name (enforce)``)."""
    found = {}
    for line in report.lines("apparmor-profiles"):
        m = re.fullmatch(r"(.+) \((\w+)\)", line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    return found


def check_apparmor_enforcing(report: BootReport, profiles: tuple[str, ...]) -> None:
    """The LSM is on, apparmor.service loaded the profiles, and every profile the kit names is
    loaded in enforce mode (not complain, not missing)."""
    kernel = report.lines("apparmor-kernel")
    assert "enabled Y" in kernel, report.sections["apparmor-kernel"]
    assert "service active" in kernel, report.sections["apparmor-kernel"]
    lsm = next((x for x in kernel if x.startswith("lsm ")), "")
    assert "apparmor" in lsm.split()[1].split(","), lsm
    loaded = loaded_profiles(report)
    wrong = {p: loaded.get(p, "not loaded") for p in profiles if loaded.get(p) != "enforce"}
    assert wrong == {}, wrong


def check_apparmor_confined(
    report: BootReport, units: dict[str, str], programs: dict[str, str]
) -> None:
    """Every process of every fieldkit unit runs in its unit's profile, enforced; the programs
    with a profile (by command name: mosquitto, chromium, cupsd, freshclam) in theirs."""
    seen: set[str] = set()
    wrong = []
    for line in report.lines("apparmor-confined"):
        unit, _pid, comm, label = line.split(" ", 3)
        if unit in units:
            seen.add(unit)
            if label != f"{units[unit]} (enforce)":
                wrong.append(line)
        elif comm in programs and label != f"{programs[comm]} (enforce)":
            wrong.append(line)
        elif comm in programs:
            seen.add(comm)
    assert wrong == [], wrong
    missing = sorted(set(units) - seen)
    assert missing == [], f"no process seen for {missing}: {report.sections['apparmor-confined']}"


def check_apparmor_no_denials(report: BootReport) -> None:
    """Nothing the kit does in a normal boot is refused: no DENIED line before the probe."""
    assert report.lines("apparmor-denials") == [], report.sections["apparmor-denials"]


def check_apparmor_denies_and_logs(report: BootReport, probe: Probe) -> None:
    """Inside the service's profile its own folder is listed and another service's folder is
    refused (EACCES), the refusal is in the audit trail as DENIED, and the service itself is
    still active (running) afterwards."""
    lines = report.lines("apparmor-probe")
    assert "own allowed" in lines, report.sections["apparmor-probe"]
    assert "other refused 13" in lines, report.sections["apparmor-probe"]
    log = report.lines("apparmor-probe-log")
    assert any('apparmor="DENIED"' in x and f'profile="{probe.profile}"' in x for x in log), log
    unit = dict(x.split("=", 1) for x in report.lines("apparmor-probe-unit"))
    assert (unit.get("ActiveState"), unit.get("SubState")) == ("active", "running"), unit


def complain_as_enforced(report: BootReport) -> dict[str, str]:
    """The report's probe sections replaced by the complain-mode run's: the off-case."""
    return dict(report.sections) | {
        "apparmor-probe": report.sections.get("apparmor-complain-probe", ""),
        "apparmor-probe-log": report.sections.get("apparmor-complain-probe-log", ""),
    }
