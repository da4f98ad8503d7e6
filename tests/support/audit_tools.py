"""The auditors' own tools, run inside a booted image (issue 19): Lynis and OpenSCAP.

Neither is installed in an image. The host fetches Debian's packages with ``apt-get download``
(into the boot's work folder), and the VM gets them over fw_cfg, unpacked in ``/run`` (a tmpfs,
gone at power-off):

- **Lynis** (Debian's ``lynis`` 3.0.8): ``lynis audit system --quick``, run in the background
  with a time limit; the report gives the hardening index, every suggestion and warning, the
  run's wall time and its slowest tests (from Lynis's own log).
- **OpenSCAP** (Debian's ``openscap-scanner`` 1.3.7 with ``ssg-debian`` 0.1.65, the SCAP
  Security Guide): the newest Debian content in Debian 12 is the Debian 11 data stream, and it
  holds no CIS profile (ANSSI BP-028 minimal/intermediary/enhanced/high and "standard" only).
  Its platform check (``/etc/debian_version`` matching ``11.x``) and the release name in its
  APT source rule (bullseye) are rewritten to Debian 12 (bookworm), nothing else; the profile
  run is ANSSI BP-028 **high**, as shipped, and again tailored with :data:`OSCAP_EXCLUDED`
  deselected (each with its reason; docs/images.md lists them).

:func:`audit_files` makes what the VM needs; :func:`audit_sections` is the report's shell
(sections ``lynis``, ``lynis-slowest``, ``oscap``, ``oscap-tailored``); :func:`lynis_result`
and :func:`oscap_result` read them back.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

FW = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.fieldkit"
VENV_PYTHON = "/opt/fieldkit/venv/bin/python"

# Debian's packages: the scanner and the libraries it needs that neither image has (found with
# `ldd` in both rootfs), and the SCAP Security Guide's Debian content.
OSCAP_PACKAGES = (
    "openscap-scanner",
    "openscap-common",
    "libopenscap25",
    "libopendbx1",
    "libpcre3",
    "librpm9",
    "librpmio9",
    "libxmlsec1",
    "libxmlsec1-openssl",
    "libxslt1.1",
    "libyaml-0-2",
    "liblua5.3-0",
    "ssg-debian",
)
DATASTREAM = "usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml"
PROFILE = "xccdf_org.ssgproject.content_profile_anssi_np_nt28_high"
TAILORED = "xccdf_org.fieldkit_profile_anssi_np_nt28_high_appliance"
RULE = "xccdf_org.ssgproject.content_rule_"

_SYSLOG = (
    "the erasure policy keeps the journal in memory (R12) and no syslog daemon writes to disk; "
    "the audit trail is auditd's. ANSSI asks for rsyslog and syslog-ng both, which no system has"
)
_PARTITION = (
    "an appliance image: one root file system, /tmp and the kiosk's home on tmpfs, the tablet's "
    "state on its own encrypted volume; a full /var cannot stop the services (journal in memory, "
    "auditd suspends logging when the disk is low)"
)
# Rules of the profile that do not fit an appliance, each with its reason (docs/images.md).
OSCAP_EXCLUDED: dict[str, str] = {
    "partition_for_home": _PARTITION,
    "partition_for_var": _PARTITION,
    "partition_for_var_log": _PARTITION,
    "partition_for_var_log_audit": _PARTITION
    + " (the tablet's audit log is on the data volume, not /var/log/audit)",
    "package_rsyslog_installed": _SYSLOG,
    "service_rsyslog_enabled": _SYSLOG,
    "rsyslog_files_groupownership": _SYSLOG,
    "rsyslog_files_ownership": _SYSLOG,
    "rsyslog_files_permissions": _SYSLOG,
    "package_syslogng_installed": _SYSLOG,
    "service_syslogng_enabled": _SYSLOG,
    "package_cron_installed": "no cron: systemd timers only; cron/at are restricted to root "
    "should a package bring one (CIS 5.1.8/5.1.9)",
    "package_ntp_installed": "systemd-timesyncd keeps the clock (a client only); ntpd would "
    "listen on UDP 123, which the policy does not name",
    "service_ntp_enabled": "as package_ntp_installed",
    "sshd_set_keepalive_0": "the profile wants ClientAliveCountMax 0, which since OpenSSH 8.2 "
    "(Debian 12 has 9.2) turns the check off instead of dropping a silent client; the hub "
    "drops one after 2 x 300 s, and an idle shell ends after 900 s (TMOUT)",
    "sshd_set_idle_timeout": "its check wants ClientAliveCountMax 0 as well (it extends "
    "sshd_set_keepalive_0's definition, and the data stream makes it require that rule, so "
    "deselecting one drops both); its own part, ClientAliveInterval at most the profile's 5 "
    "minutes, holds: the hub sets 300",
}

OSCAP_ENV = (
    "LD_LIBRARY_PATH=/run/oscap/usr/lib/x86_64-linux-gnu:/run/oscap/lib/x86_64-linux-gnu:"
    "/run/oscap/usr/lib OSCAP_XSLT_PATH=/run/oscap/usr/share/openscap/xsl "
    "OSCAP_CPE_PATH=/run/oscap/usr/share/openscap/cpe"
)

# The report's shell (inside the VM, after the system settled). Lynis runs in the background
# with a time limit, so a slow run still reports how far it got and which tests took the time.
LYNIS_SECTIONS = rf"""
section lynis
rm -rf /run/lynis && mkdir -p /run/lynis
cp {FW}/lynis.deb/raw /run/lynis.deb
dpkg-deb -x /run/lynis.deb /run/lynis
cp /run/lynis/etc/lynis/default.prf /run/lynis/usr/share/lynis/
start=$(date +%s)
(cd /run/lynis/usr/share/lynis && LC_ALL=C.UTF-8 timeout ${{LYNIS_LIMIT:-3600}} sh \
    /run/lynis/usr/sbin/lynis audit system --quick --no-colors \
    --plugin-dir /run/lynis/etc/lynis/plugins --logfile /run/lynis.log \
    --report-file /run/lynis-report.dat >/run/lynis.out 2>&1)
echo "exit $?"
echo "ran $(($(date +%s) - start)) s"
tail -n 3 /run/lynis.out
grep -E '^(lynis_version|hardening_index|tests_executed|suggestion|warning)' \
    /run/lynis-report.dat
section lynis-slowest
{VENV_PYTHON} - <<'EOF'
import datetime, re
last = None
spent = {{}}
for line in open("/run/lynis.log", errors="replace"):
    m = re.match(r"(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)", line)
    if not m:
        continue
    at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    test = re.search(r"Performing test ID (\S+)", m.group(2))
    if test or "Program ended" in m.group(2):
        if last:
            spent[last[0]] = spent.get(last[0], 0) + (at - last[1]).total_seconds()
        last = (test.group(1) if test else "end", at)
if last and last[0] != "end":
    print("unfinished", last[0])
for name, seconds in sorted(spent.items(), key=lambda x: -x[1])[:15]:
    print(f"{{seconds:.0f}} {{name}}")
EOF
"""
OSCAP_SECTIONS = rf"""
section oscap
# /run is noexec on the images (so is /tmp): OpenSCAP's program gets a tmpfs of its own that
# allows exec, in /run (memory only, gone at power-off), unmounted after the scans.
umount /run/oscap 2>/dev/null; rm -rf /run/oscap && mkdir -p /run/oscap
mount -t tmpfs -o size=512m,mode=0700,nosuid,nodev tmpfs /run/oscap
tar -xzf {FW}/oscap.tar.gz/raw -C /run/oscap
env {OSCAP_ENV} /run/oscap/usr/bin/oscap --version | head -n 1
start=$(date +%s)
env {OSCAP_ENV} /run/oscap/usr/bin/oscap xccdf eval --skip-valid --profile {PROFILE} \
    --results /run/oscap-results.xml /run/oscap/{DATASTREAM} >/run/oscap.out 2>&1
echo "exit $?"
echo "ran $(($(date +%s) - start)) s"
awk '/^Rule/{{rule=$2}} /^Result/{{print $2, rule}}' /run/oscap.out
section oscap-tailored
env {OSCAP_ENV} /run/oscap/usr/bin/oscap xccdf eval --skip-valid \
    --tailoring-file /run/oscap/tailoring.xml --profile {TAILORED} \
    --results /run/oscap-tailored.xml /run/oscap/{DATASTREAM} >/run/oscap-tailored.out 2>&1
echo "exit $?"
awk '/^Rule/{{rule=$2}} /^Result/{{print $2, rule}}' /run/oscap-tailored.out
umount /run/oscap
"""


def audit_sections() -> str:
    """The auditors the boot runs: both, or those FIELDKIT_AUDIT_TOOLS names ("lynis",
    "oscap", comma-separated; "" for none). A boot for one tool fails the other's check."""
    import os

    wanted = os.environ.get("FIELDKIT_AUDIT_TOOLS", "lynis,oscap").split(",")
    return (LYNIS_SECTIONS if "lynis" in wanted else "") + (
        OSCAP_SECTIONS if "oscap" in wanted else ""
    )


def _download(packages: tuple[str, ...], into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in packages if not list(into.glob(f"{p}_*.deb"))]
    if wanted:
        subprocess.run(["apt-get", "download", "-q", *wanted], cwd=into, check=True)
    return [sorted(into.glob(f"{p}_*.deb"))[-1] for p in packages]


def tailoring(datastream: str = f"/run/oscap/{DATASTREAM}") -> str:
    """The ANSSI BP-028 high profile less :data:`OSCAP_EXCLUDED` (an XCCDF 1.2 tailoring)."""
    unselected = "\n".join(
        f'    <xccdf:select idref="{RULE}{rule}" selected="false"/>' for rule in OSCAP_EXCLUDED
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xccdf:Tailoring xmlns:xccdf="http://checklists.nist.gov/xccdf/1.2"
    id="xccdf_org.fieldkit_tailoring_appliance">
  <xccdf:benchmark href="{datastream}"/>
  <xccdf:version time="2026-12-05T00:00:00">1</xccdf:version>
  <xccdf:Profile id="{TAILORED}" extends="{PROFILE}">
    <xccdf:title>ANSSI BP-028 high, less what does not fit an appliance</xccdf:title>
{unselected}
  </xccdf:Profile>
</xccdf:Tailoring>
"""


def oscap_bundle(work: Path) -> Path:
    """The scanner, its libraries and the Debian 11 data stream adapted to Debian 12, as one
    tarball for the VM's ``/run/oscap``."""
    debs = _download(OSCAP_PACKAGES, work / "debs")
    tree = work / "oscap"
    shutil.rmtree(tree, ignore_errors=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    for bulky in ("usr/share/doc", "usr/share/man", "usr/share/openscap/schemas"):
        shutil.rmtree(tree / bulky, ignore_errors=True)  # --skip-valid: no schemas needed
    for content in (tree / DATASTREAM).parent.iterdir():
        if content.name != Path(DATASTREAM).name:
            content.unlink()
    stream = tree / DATASTREAM
    text = stream.read_text(encoding="utf-8")
    adapted = text.replace(r"^11.[0-9]+$", r"^12.[0-9]+$")  # the platform: Debian 12
    adapted = re.sub(r"\bbullseye(-security)?\[", r"bookworm\1[", adapted)
    assert adapted.count(r"^12.[0-9]+$") >= 1 and adapted != text
    stream.write_text(adapted, encoding="utf-8")
    (tree / "tailoring.xml").write_text(tailoring(), encoding="utf-8")
    bundle = work / "oscap.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(tree, arcname=".")
    return bundle


def audit_files(work: Path) -> dict[str, Path]:
    """What the VM gets over fw_cfg for :func:`audit_sections`."""
    (lynis,) = _download(("lynis",), work / "debs")
    return {"lynis.deb": lynis, "oscap.tar.gz": oscap_bundle(work)}


@dataclass(frozen=True)
class Lynis:
    index: int | None
    suggestions: list[str]
    warnings: list[str]
    seconds: int | None
    slowest: list[str]


def lynis_result(sections: dict[str, str]) -> Lynis:
    lines = sections.get("lynis", "").splitlines()
    index = [int(x.split("=", 1)[1]) for x in lines if x.startswith("hardening_index=")]
    ran = [int(x.split()[1]) for x in lines if re.match(r"^ran \d+ s$", x)]
    return Lynis(
        index=index[0] if index else None,
        suggestions=[x.split("=", 1)[1] for x in lines if x.startswith("suggestion[]=")],
        warnings=[x.split("=", 1)[1] for x in lines if x.startswith("warning[]=")],
        seconds=ran[0] if ran else None,
        slowest=sections.get("lynis-slowest", "").splitlines(),
    )


@dataclass(frozen=True)
class Oscap:
    results: dict[str, str]  # rule (without the SSG prefix) -> pass, fail, notapplicable, …

    @property
    def passed(self) -> list[str]:
        return sorted(r for r, v in self.results.items() if v == "pass")

    @property
    def failed(self) -> list[str]:
        return sorted(r for r, v in self.results.items() if v in ("fail", "error", "unknown"))

    @property
    def score(self) -> float:
        """Passing rules over the rules that were checked (pass, fail, error, unknown)."""
        judged = len(self.passed) + len(self.failed)
        return 100.0 * len(self.passed) / judged if judged else 0.0


def oscap_result(sections: dict[str, str], section: str) -> Oscap:
    results = {}
    for line in sections.get(section, "").splitlines():
        words = line.split()
        if len(words) == 2 and words[1].startswith(RULE):
            results[words[1].removeprefix(RULE)] = words[0]
    return Oscap(results)


# The targets: Lynis's hardening index, and the share of the rules OpenSCAP checked
# that pass (ANSSI BP-028 high less OSCAP_EXCLUDED; docs/images.md names both).
LYNIS_TARGET = 88
OSCAP_TARGET = 90.0


def check_lynis(sections: dict[str, str]) -> None:
    """Lynis (Debian's package, run in the VM) rates the device at least LYNIS_TARGET."""
    found = lynis_result(sections)
    assert found.index is not None, (
        "Lynis reported no hardening index:\n"
        + sections.get("lynis", "")[-3000:]
        + "\nslowest:\n"
        + "\n".join(found.slowest)
    )
    assert found.index >= LYNIS_TARGET, (found.index, found.suggestions)


def check_oscap(sections: dict[str, str]) -> None:
    """OpenSCAP, ANSSI BP-028 high less the appliance exclusions: at least OSCAP_TARGET % of
    the rules it checked pass."""
    found = oscap_result(sections, "oscap-tailored")
    assert found.results, sections.get("oscap-tailored", "")[-3000:]
    assert not set(found.results) & set(OSCAP_EXCLUDED), "the tailoring did not apply"
    # A rule the data stream makes depend on an excluded one drops out with it, silently (the
    # booted hub's sshd_set_idle_timeout did so): every rule the shipped run judged is either
    # excluded, with its reason, or judged again.
    shipped = oscap_result(sections, "oscap")
    dropped = set(shipped.results) - set(found.results) - set(OSCAP_EXCLUDED)
    assert not dropped, f"the tailored run dropped rules it does not exclude: {sorted(dropped)}"
    assert found.score >= OSCAP_TARGET, (found.score, found.failed)


def audit_results(sections: dict[str, str]) -> str:
    """The measurements for docs/images.md: Lynis's index, time, slowest tests, every
    suggestion and warning; OpenSCAP's score as shipped and tailored, with the failed rules."""
    found = lynis_result(sections)
    lines = [
        f"Lynis {found.index} in {found.seconds} s; slowest: {found.slowest}",
        f"{len(found.suggestions)} suggestions, {len(found.warnings)} warnings:",
        *found.suggestions,
        *found.warnings,
    ]
    for section in ("oscap", "oscap-tailored"):
        scan = oscap_result(sections, section)
        lines.append(
            f"{section}: {scan.score:.1f} % ({len(scan.passed)} pass), failed: {scan.failed}"
        )
    return "\n".join(lines)
