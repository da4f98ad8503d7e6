"""Driving ClamAV's own tools: freshclam (rendered config, one run) and clamscan (one scan).

freshclam runs one-shot under the antivirus service's schedule rather than as its own daemon,
so every run's outcome — updated, up to date, or failed and why — is seen and reported.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fieldkit.antivirus.settings import OFFICIAL_DATABASES, AntivirusSection

log = logging.getLogger(__name__)

# freshclam's closing errors are short, fixed phrases; keep at most this many per run.
MAX_ERROR_LINES = 5


class EngineError(Exception):
    """A ClamAV tool could not be run at all (missing binary, no mirror configured)."""


def render_freshclam_conf(
    section: AntivirusSection, database_dir: Path, *, owner: str | None = None
) -> str:
    """freshclam.conf that talks to the hub mirror only, never to ClamAV's public network.

    ``PrivateMirror`` overrides ``DatabaseMirror``, ``DNSDatabaseInfo`` and ``ScriptedUpdates``
    (freshclam.conf(5)), so no DNS lookups and no fallback to database.clamav.net happen.
    """
    if section.mirror_url is None:
        raise EngineError("no definitions mirror is configured (antivirus.mirror_url)")
    user = owner or section.database_owner or pwd.getpwuid(os.geteuid()).pw_name
    lines = [
        "# Rendered by fieldkit from the antivirus policy; edits are overwritten.",
        f"DatabaseDirectory {database_dir}",
        f"DatabaseOwner {user}",
        "Foreground yes",
        f"Checks {section.checks_per_day}",
        f"PrivateMirror {section.mirror_url}",
        "ScriptedUpdates no",
        f"ConnectTimeout {section.connect_timeout}",
        f"ReceiveTimeout {section.receive_timeout}",
        f"MaxAttempts {section.max_attempts}",
        "TestDatabases yes",
    ]
    for official in OFFICIAL_DATABASES:
        if official not in section.official_databases:
            lines.append(f"ExcludeDatabase {official}")
    lines.append(f"Bytecode {'yes' if 'bytecode' in section.official_databases else 'no'}")
    for name in section.custom_databases:
        lines.append(f"DatabaseCustomURL {section.mirror_url}/{name}")
    if section.clamd_conf is not None:
        lines.append(f"NotifyClamd {section.clamd_conf}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FreshclamRun:
    """The outcome of one freshclam run."""

    ok: bool
    returncode: int
    updated: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0


_UPDATED = re.compile(r"^(\S+) (?:updated|database available for (?:update|download))")
_ERROR = re.compile(r"^ERROR: (.*)$")


def parse_freshclam_output(text: str) -> tuple[list[str], list[str]]:
    """Databases updated and error lines, from freshclam's output."""
    updated: list[str] = []
    errors: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if m := _UPDATED.match(line):
            updated.append(m.group(1))
        elif (m := _ERROR.match(line)) and m.group(1) not in errors:
            errors.append(m.group(1))
    return updated, errors[-MAX_ERROR_LINES:]


# freshclam (ClamAV >= 0.104, documented in freshclam(1) since 0.104.1) hands this variable to
# libcurl as CURLOPT_CAINFO: the CA bundle it verifies the mirror's certificate with.
CA_BUNDLE_VARIABLE = "CURL_CA_BUNDLE"


def freshclam_environment(section: AntivirusSection) -> dict[str, str]:
    """freshclam's environment: the kit CA as its only CA bundle (the mirror is HTTPS only).

    Refuses when the kit CA file is missing: without CURL_CA_BUNDLE libcurl would verify the
    mirror against the system's public CAs instead. (libcurl also looks in its compiled-in CA
    folder, ``SYSTEM_CA_FOLDER``: the tablet's units mount an empty one there.)
    """
    if not section.mirror_ca.is_file():
        raise EngineError(f"the kit CA for the definitions mirror ({section.mirror_ca}) is missing")
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {CA_BUNDLE_VARIABLE, "SSL_CERT_FILE", "SSL_CERT_DIR"}
    }
    environment[CA_BUNDLE_VARIABLE] = str(section.mirror_ca)
    return environment


# libcurl's compiled-in CA folder (Debian: --with-ca-path): libcurl trusts the CAs there as well
# as CURL_CA_BUNDLE's, so freshclam's units mount an empty folder over it (tested both ways).
SYSTEM_CA_FOLDER = Path("/etc/ssl/certs")


def freshclam_sandbox(section: AntivirusSection) -> dict[str, str]:
    """The unit directives that make the kit CA the only one freshclam trusts for the mirror."""
    return {
        "Environment": f"{CA_BUNDLE_VARIABLE}={section.mirror_ca}",
        "TemporaryFileSystem": f"{SYSTEM_CA_FOLDER}:ro",
    }


def render_freshclam_dropin(section: AntivirusSection) -> str:
    """The drop-in for Debian's clamav-freshclam.service (the tablet's freshclam daemon)."""
    lines = [
        "# Rendered by fieldkit from the antivirus policy; edits are overwritten.",
        "# The hub mirror is HTTPS: freshclam trusts the kit CA alone for it (CURL_CA_BUNDLE),",
        "# with an empty system CA folder in its namespace (libcurl would read that one too).",
        "[Service]",
        *(f"{key}={value}" for key, value in freshclam_sandbox(section).items()),
    ]
    return "\n".join(lines) + "\n"


def run_freshclam(section: AntivirusSection, database_dir: Path, conf_path: Path) -> FreshclamRun:
    """Render the config, then run freshclam once; a failure leaves the old databases in place."""
    conf = render_freshclam_conf(section, database_dir)
    environment = freshclam_environment(section)
    database_dir.mkdir(parents=True, exist_ok=True)
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(conf, encoding="utf-8")
    started = time.time()
    cmd = [section.freshclam, f"--config-file={conf_path}", "--stdout", "--no-warnings"]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=section.freshclam_timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env=environment,
        )
    except FileNotFoundError:
        raise EngineError(f"freshclam not found ({section.freshclam})") from None
    except subprocess.TimeoutExpired:
        return FreshclamRun(
            False,
            -1,
            errors=[f"freshclam did not finish within {section.freshclam_timeout:.0f}s"],
            started_at=started,
            finished_at=time.time(),
        )
    updated, errors = parse_freshclam_output(done.stdout + "\n" + done.stderr)
    if done.returncode != 0 and not errors:
        errors = [f"freshclam exited with status {done.returncode}"]
    log.info("freshclam exited %d; %d database(s) updated", done.returncode, len(updated))
    return FreshclamRun(
        done.returncode == 0, done.returncode, updated, errors, started, time.time()
    )


@dataclass(frozen=True)
class Detection:
    path: str
    signature: str


@dataclass(frozen=True)
class ClamscanRun:
    """The outcome of one clamscan run: clean, infected, or failed."""

    returncode: int
    detections: list[Detection]
    errors: list[str]
    started_at: float
    finished_at: float

    @property
    def completed(self) -> bool:
        # clamscan: 0 nothing found, 1 something found, 2 some error occurred.
        return self.returncode in (0, 1) and not self.errors


_FOUND = re.compile(r"^(.*): (\S+) FOUND$")


def parse_clamscan_output(stdout: str, stderr: str) -> tuple[list[Detection], list[str]]:
    detections = [
        Detection(m.group(1), m.group(2))
        for line in stdout.splitlines()
        if (m := _FOUND.match(line.rstrip()))
    ]
    # Warning and error lines may name files; keep only what went wrong, not where.
    errors = sorted(
        {
            line.rsplit(": ", 1)[-1].strip()
            for line in (stdout + "\n" + stderr).splitlines()
            if line.startswith(("ERROR:", "WARNING:", "LibClamAV Error:"))
        }
    )
    return detections, errors


def run_clamscan(section: AntivirusSection, database_dir: Path, paths: list[Path]) -> ClamscanRun:
    """Scan ``paths`` recursively with the databases in ``database_dir``."""
    started = time.time()
    cmd = [
        section.clamscan,
        f"--database={database_dir}",
        "--recursive",
        "--no-summary",
        "--stdout",
        "--infected",
        "--cross-fs=no",
        "--",
        *[str(p) for p in paths],
    ]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=section.scan_timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise EngineError(f"clamscan not found ({section.clamscan})") from None
    except subprocess.TimeoutExpired:
        msg = f"scan did not finish within {section.scan_timeout:.0f}s"
        return ClamscanRun(-1, [], [msg], started, time.time())
    detections, errors = parse_clamscan_output(done.stdout, done.stderr)
    if done.returncode not in (0, 1) and not errors:
        errors = [f"clamscan exited with status {done.returncode}"]
    return ClamscanRun(done.returncode, detections, errors, started, time.time())
