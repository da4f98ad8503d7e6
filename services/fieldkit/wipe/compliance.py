"""The compliance run (R30, R31): does a device enforce the erasure policy, and is it clean?

Checks a live device (``/``), a mounted rootfs (``--root``) or a raw disk image (``--image``)
against ``policies/erasure.yaml``, ``policies/browser.yaml``, ``policies/usb.yaml``,
``policies/network.yaml`` (with the site's addresses from the enrolment) and
``policies/antivirus.toml``, read with the models the image build renders its files from
(``fieldkit.policies``, ``fieldkit.network``, ``fieldkit.datavol``). On the live device the
data volume and the firewall are also checked as the kernel has them: mounted from LUKS2 with
its only key sealed to the TPM; the loaded nftables ruleset identical to the rendering. Then runs
the residue scan of the whole catalogue. The report is signed with the device key and written
as text, JSON and PDF; any failed check makes the command exit non-zero.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field

from fieldkit import datavol
from fieldkit.antivirus.database import DatabaseError, list_databases
from fieldkit.antivirus.gate import currency_database
from fieldkit.antivirus.settings import AntivirusSection
from fieldkit.models import Strict
from fieldkit.network import (
    DROPIN_NAME,
    NetworkError,
    listening_sockets,
    live_ruleset_differences,
    load_site,
    render_site,
    unlisted_sockets,
)
from fieldkit.policies import (
    BROWSER_POLICY_PATH,
    CORE_PATTERN,
    NFTABLES_PATH,
    USBGUARD_RULES_PATH,
    ErasurePolicy,
    PolicySet,
    chromium_policy,
    render_erasure,
    usbguard_rules,
)
from fieldkit.wipe.catalogue import Catalogue
from fieldkit.wipe.datavol import live_volume
from fieldkit.wipe.markers import MarkerSearch, daily_markers
from fieldkit.wipe.record import Finding, LocationResult, public_hex, signature_valid
from fieldkit.wipe.settings import WipeSection

Verdict = Literal["pass", "fail", "skip"]
FALSE_WORDS = {"no", "off", "false", "0"}


class Check(Strict):
    name: str
    requirement: str
    verdict: Verdict
    detail: str


class ComplianceReport(Strict):
    v: Literal[1] = 1
    type: Literal["compliance-report"] = "compliance-report"
    device: str
    target: str
    at: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    policies: dict[str, str]  # file name -> sha256 of the policy in force for the check
    checks: list[Check]
    residue: list[LocationResult]
    ok: bool
    signer: str = ""
    signature: str = ""

    def body(self) -> bytes:
        data = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def under(root: Path, path: str | PurePath) -> Path:
    """``path`` (absolute on the device) inside the rootfs at ``root``."""
    return root / str(path).lstrip("/")


def systemd_setting(root: Path, main: str, section: str, key: str) -> str | None:
    """A systemd config value: the main file, then drop-ins in ``<main>.d/`` (last wins)."""
    files = [under(root, main), *sorted(under(root, main + ".d").glob("*.conf"))]
    value = None
    for path in files:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(path.read_text(encoding="utf-8"))
        except (OSError, configparser.Error):
            continue
        if parser.has_option(section, key):
            value = parser.get(section, key).strip()
    return value


def directives(path: Path) -> dict[str, str]:
    """``Key value`` lines of an Apache-style or mosquitto config (comments dropped)."""
    found: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        words = line.split("#", 1)[0].split(None, 1)
        if len(words) == 2 and not words[0].startswith("<"):
            found[words[0].lower()] = words[1].strip()
    return found


def check_journald(root: Path, policy: ErasurePolicy) -> Check:
    storage = systemd_setting(root, "etc/systemd/journald.conf", "Journal", "Storage")
    want = policy.journald.storage
    ok = storage == want
    return Check(
        name="journald storage",
        requirement="R12",
        verdict="pass" if ok else "fail",
        detail=f"Storage={storage or '(default: auto)'}; policy {want}",
    )


def check_coredump(root: Path, policy: ErasurePolicy, live: bool) -> Check:
    storage = systemd_setting(root, "etc/systemd/coredump.conf", "Coredump", "Storage")
    sysctl: dict[str, str] = {}
    for path in [
        under(root, "etc/sysctl.conf"),
        *sorted(under(root, "etc/sysctl.d").glob("*.conf")),
    ]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            if "=" in line and not line.lstrip().startswith(("#", ";")):
                key, value = line.split("=", 1)
                sysctl[key.strip()] = value.strip()
    pattern = sysctl.get("kernel.core_pattern")
    problems = []
    if storage != "none":
        problems.append(f"systemd-coredump Storage={storage or '(default: external)'}")
    if pattern != CORE_PATTERN:
        problems.append(f"kernel.core_pattern in sysctl.d is {pattern or 'unset'}")
    if live:
        running = Path("/proc/sys/kernel/core_pattern").read_text().strip()
        if running != CORE_PATTERN:
            problems.append(f"running kernel.core_pattern is {running}")
    return Check(
        name="core dumps off",
        requirement="R12",
        verdict="fail" if problems else "pass",
        detail="; ".join(problems) or f"Storage=none, core_pattern {CORE_PATTERN}",
    )


def check_swap(root: Path, policy: ErasurePolicy, live: bool) -> Check:
    entries = []
    try:
        for line in under(root, "etc/fstab").read_text(encoding="utf-8").splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 3 and fields[2] == "swap":
                entries.append(fields[0])
    except OSError:
        pass
    if live:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
        entries += [line.split()[0] for line in lines if line.strip()]
    ok = policy.swap or not entries
    return Check(
        name="no swap",
        requirement="R12",
        verdict="pass" if ok else "fail",
        detail=f"{len(entries)} swap areas configured or active" if entries else "no swap",
    )


def _preserves(value: str | None) -> bool:
    # CUPS keeps job history and files (for a day) unless told not to.
    return value is None or value.lower() not in FALSE_WORDS


def check_cups(root: Path, policy: ErasurePolicy) -> Check:
    conf = directives(under(root, "etc/cups/cupsd.conf"))
    files = _preserves(conf.get("preservejobfiles"))
    history = _preserves(conf.get("preservejobhistory"))
    problems = []
    if files and not policy.cups.preserve_job_files:
        problems.append(f"PreserveJobFiles {conf.get('preservejobfiles', '(default: 1d)')}")
    if history and not policy.cups.preserve_job_history:
        problems.append(f"PreserveJobHistory {conf.get('preservejobhistory', '(default: Yes)')}")
    return Check(
        name="CUPS keeps no jobs",
        requirement="R12",
        verdict="fail" if problems else "pass",
        detail="; ".join(problems) or "PreserveJobFiles No, PreserveJobHistory No",
    )


def check_broker(root: Path) -> Check:
    """The bus broker keeps nothing on disk (its renderer, fieldkit.broker, never lets it)."""
    files = [
        under(root, "etc/mosquitto/mosquitto.conf"),
        *sorted(under(root, "etc/mosquitto/conf.d").glob("*.conf")),
    ]
    on = [p.name for p in files if directives(p).get("persistence", "false").lower() == "true"]
    ok = not on
    return Check(
        name="broker persistence off",
        requirement="R12",
        verdict="pass" if ok else "fail",
        detail=f"persistence true in {', '.join(on)}" if on else "persistence false",
    )


def check_browser(root: Path, policies: PolicySet) -> Check:
    """Chromium's managed policy in force is what ``policies/browser.yaml`` renders."""
    required = chromium_policy(policies.browser)
    merged: dict[str, object] = {}
    folder = under(root, str(BROWSER_POLICY_PATH.parent).lstrip("/"))
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Check(
                name="browser policy",
                requirement="R11",
                verdict="fail",
                detail=f"{path.name} is not valid JSON",
            )
        if isinstance(data, dict):
            merged.update(data)
    wrong = [
        f"{key}={merged.get(key, '(unset)')}"
        for key, value in required.items()
        if merged.get(key) != value
    ]
    return Check(
        name="browser policy",
        requirement="R11",
        verdict="fail" if wrong else "pass",
        detail=("not as required: " + ", ".join(wrong))
        if wrong
        else f"{len(required)} settings as policies/browser.yaml renders them",
    )


def check_usb(root: Path, policies: PolicySet) -> Check:
    """USBGuard's rules in force are what ``policies/usb.yaml`` renders: mass storage blocked,
    the allowed classes (the camera, the printer, HID, the card reader's 0b) and nothing else."""
    path = under(root, str(USBGUARD_RULES_PATH))
    allowed = ", ".join(i.interface for i in policies.usb.allow_interfaces)
    try:
        rules = path.read_text(encoding="utf-8")
    except OSError:
        rules = None
    if rules is None:
        detail, ok = f"{USBGUARD_RULES_PATH} is missing", False
    elif rules != usbguard_rules(policies.usb):
        detail, ok = f"{USBGUARD_RULES_PATH} is not what policies/usb.yaml renders", False
    else:
        detail, ok = f"mass storage blocked; allowed only {allowed}", True
    return Check(
        name="USB allowlist", requirement="R23", verdict="pass" if ok else "fail", detail=detail
    )


def check_data_volume(root: Path, policies: PolicySet, live: bool) -> Check:
    """R12 R24: the tablet's data volume as ``erasure.yaml`` renders it (format script, units,
    folders); on the live device also mounted from LUKS2, its only key sealed to the TPM."""
    name, requirement = "encrypted data volume", "R12"
    volume = policies.erasure.data_volume
    if volume is None:
        return Check(name=name, requirement=requirement, verdict="skip", detail="none in policy")
    rendered = render_erasure(policies.erasure, "tablet")
    problems = []
    for path in datavol.render(volume, ""):
        try:
            installed = under(root, path).read_text(encoding="utf-8")
        except OSError:
            problems.append(f"{path} is missing")
            continue
        if installed != rendered[path]:
            problems.append(f"{path} is not what erasure.yaml renders")
    found = "installed as erasure.yaml renders it (checked live on the device only)"
    if live and not problems:
        problems, found = live_volume(volume)
    return Check(
        name=name,
        requirement=requirement,
        verdict="fail" if problems else "pass",
        detail="; ".join(problems) if problems else found,
    )


def check_network(root: Path, policies: PolicySet, site_file: Path | None, live: bool) -> Check:
    """R16 R18: the firewall and the services' address lists are what the site's network (from
    the enrolment) renders; on the live device the kernel enforces exactly that ruleset."""
    name, requirement = "network allowlist", "R18"
    if site_file is None or not under(root, site_file).exists():
        return Check(
            name=name,
            requirement=requirement,
            verdict="skip",
            detail="not enrolled: no site network yet (the image's enrolment rules)",
        )
    try:
        site = load_site(under(root, site_file))
        hostname = under(root, "etc/hostname").read_text(encoding="utf-8").strip() or "fieldkit"
        files = render_site(policies.network, site, hostname, policies.services)
    except (NetworkError, OSError) as exc:
        return Check(name=name, requirement=requirement, verdict="fail", detail=str(exc))
    problems = []
    for path, body in sorted(files.items()):
        if path != NFTABLES_PATH and path.name != DROPIN_NAME:
            continue  # resolver, time, hosts, Wi-Fi: the site's, not the allowlist
        try:
            installed = under(root, path).read_text(encoding="utf-8")
        except OSError:
            problems.append(f"{path} is missing")
            continue
        if installed != body:
            problems.append(f"{path} is not what the site's network renders")
    rules = len(policies.network.outbound) + len(policies.network.inbound)
    found = f"hub {site.hub}: the ruleset and {len(files) - 1} files as the site's network renders"
    if live and not problems:
        try:
            differences = live_ruleset_differences(files[NFTABLES_PATH])
        except NetworkError as exc:
            differences = [str(exc)]
        problems += [f"loaded ruleset {d}" for d in differences[:5]]
        found = f"hub {site.hub}: the kernel enforces the rendered ruleset ({rules} policy rules)"
    return Check(
        name=name,
        requirement=requirement,
        verdict="fail" if problems else "pass",
        detail="; ".join(problems) if problems else found,
    )


def check_listening(policies: PolicySet) -> Check:
    """Issue 19, live only: nothing listens that ``network.yaml``'s ``listening`` does not
    name: no socket beyond loopback, no loopback port it does not list, each held by the
    program it names (read from ``/proc``, as root)."""
    sockets = listening_sockets()
    problems = unlisted_sockets(sockets, policies.network.listening)
    return Check(
        name="listening sockets",
        requirement="R16",
        verdict="fail" if problems else "pass",
        detail="; ".join(problems[:8])
        if problems
        else f"{len(sockets)} listening, all on loopback and named: "
        + ", ".join(str(s) for s in sockets),
    )


def check_antivirus(root: Path, antivirus: AntivirusSection | None, now: float) -> Check:
    if antivirus is None:
        return Check(
            name="antivirus definitions",
            requirement="R10",
            verdict="skip",
            detail="no policies/antivirus.toml",
        )
    folder = under(root, antivirus.database_dir or "/var/lib/clamav")
    try:
        databases = list_databases(folder)
    except DatabaseError as exc:
        return Check(
            name="antivirus definitions", requirement="R10", verdict="fail", detail=str(exc)
        )
    current = currency_database(antivirus, databases)
    age = current.age(now) if current is not None else None
    if age is None:
        return Check(
            name="antivirus definitions",
            requirement="R10",
            verdict="fail",
            detail=f"no dated definitions in {antivirus.database_dir}",
        )
    hours = age / 3600
    ok = hours <= antivirus.max_definitions_age_hours
    return Check(
        name="antivirus definitions",
        requirement="R10",
        verdict="pass" if ok else "fail",
        detail=(
            f"{current.name if current else '?'} built {hours:.1f} h ago; "
            f"policy {antivirus.max_definitions_age_hours} h"
        ),
    )


def rooted(settings: WipeSection, root: Path) -> WipeSection:
    """The catalogue's paths inside a rootfs (memory and swap are only looked at live)."""

    def move(paths: list[Path]) -> list[Path]:
        return [under(root, p) for p in paths]

    return settings.model_copy(
        update={
            "session_dirs": move(settings.session_dirs),
            "browser_profile": under(root, settings.browser_profile)
            if settings.browser_profile
            else None,
            "cups_spool_dirs": move(settings.cups_spool_dirs),
            "cups_cache_dirs": move(settings.cups_cache_dirs),
            "journal_dirs": move(settings.journal_dirs),
            "temp_dirs": move(settings.temp_dirs),
            "core_dump_dirs": move(settings.core_dump_dirs),
            "swaps_file": root / "proc-swaps-not-in-a-rootfs",
            "broker_persistence": move(settings.broker_persistence),
            "outbox_dirs": move(settings.outbox_dirs),
            "scan_process_memory": False,
        }
    )


def residue_scan(settings: WipeSection) -> list[LocationResult]:
    catalogue = Catalogue.from_settings(settings)
    search = MarkerSearch(daily_markers())
    return [catalogue.scan(location, search) for location in catalogue.locations]


def raw_image_scan(image: Path, settings: WipeSection) -> LocationResult:
    """Every byte of a disk image, free space and deleted files included."""
    search = MarkerSearch(daily_markers())
    with image.open("rb", buffering=0) as stream:
        hits, read = search.search_stream(stream, settings.chunk_bytes, 1 << 62)
    return LocationResult(
        name="disk-image",
        status="residue" if hits else "clean",
        scanned_files=1,
        scanned_bytes=read,
        findings=[Finding(where=str(image), kind=h.kind, offset=h.offset) for h in hits[:50]],
        note=f"{len(hits)} findings in the raw image",
        fails=bool(hits),
        finding_count=len(hits),
        holders={str(image): len(hits)} if hits else {},
        holder_count=1 if hits else 0,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_compliance(
    *,
    device: str,
    settings: WipeSection,
    site_file: Path | None = None,
    policies: PolicySet,
    policy_files: list[Path],
    antivirus: AntivirusSection | None,
    key: Ed25519PrivateKey,
    root: Path | None = None,
    image: Path | None = None,
    now: Callable[[], float] = time.time,
) -> ComplianceReport:
    """Every check and the residue scan; the report is signed."""
    checks: list[Check] = []
    residue: list[LocationResult]
    if image is not None:
        target = f"image {image}"
        residue = [raw_image_scan(image, settings)]
        checks.append(
            Check(
                name="policies in force",
                requirement="R30",
                verdict="skip",
                detail="a raw image is scanned only; mount it and use --root for the policy checks",
            )
        )
    else:
        live = root is None
        base = Path("/") if root is None else root
        target = "live device" if live else f"rootfs {root}"
        checks += [
            check_journald(base, policies.erasure),
            check_coredump(base, policies.erasure, live),
            check_swap(base, policies.erasure, live),
            check_cups(base, policies.erasure),
            check_broker(base),
            check_browser(base, policies),
            check_usb(base, policies),
            check_data_volume(base, policies, live),
            check_network(base, policies, site_file, live),
            check_antivirus(base, antivirus, now()),
        ]
        if live:
            checks.append(check_listening(policies))
        residue = residue_scan(settings if live else rooted(settings, base))
    ok = all(c.verdict != "fail" for c in checks) and not any(r.fails for r in residue)
    report = ComplianceReport(
        device=device,
        target=target,
        policies={p.name: digest(p) for p in policy_files},
        checks=checks,
        residue=residue,
        ok=ok,
    )
    signed = report.model_copy(update={"signer": public_hex(key)})
    return signed.model_copy(update={"signature": key.sign(signed.body()).hex()})


def report_valid(text: str) -> bool:
    report = ComplianceReport.model_validate_json(text)
    return signature_valid(report.signer, report.signature, report.body())


def report_lines(report: ComplianceReport) -> list[str]:
    lines = [f"compliance run on {report.device}, {report.target}, {report.at}"]
    for check in report.checks:
        lines.append(
            f"  {check.verdict.upper():4} {check.name:24} {check.requirement:4} {check.detail}"
        )
    for location in report.residue:
        verdict = "FAIL" if location.fails else "PASS"
        lines.append(
            f"  {verdict} residue: {location.name:18} {location.status:12} "
            f"{location.scanned_files} files, {location.scanned_bytes} bytes"
        )
        lines += [f"         {f.kind} in {f.where} at {f.offset}" for f in location.findings[:10]]
    lines.append(f"result: {'PASS' if report.ok else 'FAIL'}")
    return lines
