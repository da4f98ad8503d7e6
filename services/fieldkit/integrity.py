"""The tablet's kernel audit summary and file-integrity result, for the hub (issue 19 items 2, 3).

Two root-run reporters, each a systemd unit of the integrity role, write one small JSON file
each into the reports folder (``/var/lib/fieldkit/integrity``, on the encrypted data volume;
root's, readable by the ``fieldkit-integrity`` group, whose only member is sync's user). sync
reads the files (``fieldkit.sync.reports``) and sends each new one to the hub as a health
record. Neither reporter talks to the network or the bus; sync never reads the audit log.

- ``fieldkit integrity audit-summary`` (``fieldkit-audit-summary.timer``, every 15 minutes):
  the kernel audit trail's events since the last summary, read by the audit package's own
  parser (``ausearch --input-logs --start … --format csv --extra-keys``): counts per rule key, per
  program on a fixed allow-list (``wire.AUDIT_PROGRAMS``), failures and anomalies; and the
  trail's state from ``auditctl -s`` (enabled, lost, backlog, whether auditd runs). Of each
  event only its type, outcome, program and key are looked at; file names, users and
  arguments (which the rules keep out of the log anyway) never leave this process.
- ``fieldkit integrity check`` (``fieldkit-integrity-check.timer``, after each boot and
  daily): ``aide --check`` with AIDE's JSON report; the counts of added, removed and changed
  entries and the first ``INTEGRITY_PATHS_MAX`` paths. It exits with AIDE's status, so the
  unit fails on a change as before; the hub raises an incident from the report.

Each file's content is a ``wire.DeviceHealth`` body, checked against that model before it is
written (and again by sync, and again by the hub's ingest).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import grp
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fieldkit.sync.wire import (
    AUDIT_KEYS,
    AUDIT_PROGRAMS,
    DATA_VOLUME,
    INTEGRITY_PATHS_MAX,
    DeviceHealth,
)

log = logging.getLogger(__name__)

REPORTS_DIR = Path("/var/lib/fieldkit/integrity")
REPORTS_GROUP = "fieldkit-integrity"
KERNEL_AUDIT_REPORT = "kernel-audit.json"
FILE_INTEGRITY_REPORT = "file-integrity.json"
REPORT_FILES = (KERNEL_AUDIT_REPORT, FILE_INTEGRITY_REPORT)
AIDE_ERROR = 14  # AIDE's exit statuses from 14 up are errors, not findings


class IntegrityError(Exception):
    """A reporter could not do its job (a tool missing or failing)."""


def write_report(path: Path, body: dict[str, Any], group: str | None = REPORTS_GROUP) -> None:
    """Check the body, then replace ``path`` with it in one rename (0640, the reports group)."""
    DeviceHealth.model_validate(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.warning("group %s does not exist: the report stays root's alone", group)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out, sort_keys=True)
            out.flush()
            os.fchmod(out.fileno(), 0o640)
            if gid != -1:
                os.fchown(out.fileno(), -1, gid)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---- the kernel audit trail -------------------------------------------------------------


def audit_status(auditctl: str = "auditctl") -> dict[str, int]:
    """The kernel's audit state (``auditctl -s``): enabled, pid, lost, backlog, …"""
    try:
        done = subprocess.run(
            [auditctl, "-s"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IntegrityError(f"auditctl -s did not run: {exc.__class__.__name__}") from None
    if done.returncode != 0:
        raise IntegrityError(f"auditctl -s failed (exit {done.returncode})")
    status: dict[str, int] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().split(" ")[0].isdigit():
            status[name] = int(value.strip().split(" ")[0])
    if "enabled" not in status:
        raise IntegrityError("auditctl -s said nothing of the audit state")
    return status


# Events of the last OVERLAP seconds before the previous summary's newest are searched again
# (an event auditd wrote just after that search); the ones already counted are known by their
# second and serial number and skipped.
OVERLAP = 3
# ausearch prints and parses dates in the C locale's form, in the time zone it is given.
AUSEARCH_ENV = {"TZ": "UTC", "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
AuditEvent = dict[str, Any]


def read_events(csv_text: str) -> list[AuditEvent]:
    """The columns a summary may use of ``ausearch --format csv --extra-keys`` output (with
    ``AUSEARCH_ENV``): type, outcome, program, key, and the second and serial number that
    tell events apart. Every other column (file names, users, hosts) is dropped here."""
    events = []
    for row in csv.DictReader(io.StringIO(csv_text)):
        try:
            moment = dt.datetime.strptime(f"{row['DATE']} {row['TIME']}", "%m/%d/%y %H:%M:%S")
        except (KeyError, TypeError, ValueError):
            continue
        events.append(
            {
                "event": row.get("EVENT") or "",
                "result": row.get("RESULT") or "",
                "how": row.get("HOW") or "",
                "key": row.get("KEY") or "",
                "second": int(moment.replace(tzinfo=dt.UTC).timestamp()),
                "serial": row.get("SERIAL_NUM") or "",
            }
        )
    return events


def count_events(events: list[AuditEvent]) -> dict[str, Any]:
    """Events, failures, anomalies, per rule key and per allowed program. A rule being loaded
    (CONFIG_CHANGE, which carries the rule's key) is an event, not a hit of the rule."""
    failed = anomalies = 0
    keys: Counter[str] = Counter()
    programs: Counter[str] = Counter()
    for event in events:
        if event["result"] == "failed":
            failed += 1
        if event["event"].startswith("ANOM_"):
            anomalies += 1
        if event["event"] == "CONFIG_CHANGE":
            continue
        names = [k for k in event["key"].replace("\x01", ",").split(",") if k and k != "(null)"]
        for name in names:
            keys[name if name in AUDIT_KEYS else "other"] += 1
        if names:
            programs[event["how"] if event["how"] in AUDIT_PROGRAMS else "other"] += 1
    return {
        "events": len(events),
        "failed": failed,
        "anomalies": anomalies,
        "keys": dict(sorted(keys.items())),
        "programs": dict(sorted(programs.items())),
    }


def search_events(
    after: int | None, source: Path | None, ausearch: str = "ausearch"
) -> list[AuditEvent]:
    """The audit log's events from second ``after - OVERLAP`` on (all when None), parsed by the
    audit package's own ``ausearch`` over every rotated log (``--input-logs``: auditd.conf's
    log file) or ``source`` (a log file or folder)."""
    command = [ausearch, "--format", "csv", "--extra-keys"]
    command += ["--input", str(source)] if source is not None else ["--input-logs"]
    if after is not None:
        start = dt.datetime.fromtimestamp(after - OVERLAP, dt.UTC)
        command += ["--start", start.strftime("%m/%d/%y"), start.strftime("%H:%M:%S")]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, check=False, env=AUSEARCH_ENV
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IntegrityError(f"ausearch did not run: {exc.__class__.__name__}") from None
    if done.returncode == 1 and "no matches" in done.stderr:
        return []
    if done.returncode != 0:
        raise IntegrityError(f"ausearch failed (exit {done.returncode})")
    return read_events(done.stdout)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def kernel_audit_summary(
    state_file: Path,
    source: Path | None = None,
    *,
    ausearch: str = "ausearch",
    auditctl: str = "auditctl",
    now: float | None = None,
) -> dict[str, Any]:
    """A health body with the audit trail's summary since the last one. What the last one
    counted (its time, the newest second it saw and the events of its last seconds, the
    boot and the kernel's lost count) is kept in ``state_file`` (root's, 0600)."""
    now = time.time() if now is None else now
    try:
        previous = json.loads(state_file.read_text(encoding="utf-8"))
        if not isinstance(previous, dict):
            previous = {}
    except (OSError, ValueError):
        previous = {}
    status = audit_status(auditctl)
    last = previous.get("second") if isinstance(previous.get("second"), int) else None
    counted = {tuple(pair) for pair in previous.get("counted") or [] if len(pair) == 2}
    found = search_events(last, source, ausearch)
    fresh = [e for e in found if (e["second"], e["serial"]) not in counted]
    newest = max([e["second"] for e in found] + ([last] if last is not None else []), default=None)
    if newest is not None:
        counted = {
            (second, serial)
            for second, serial in counted | {(e["second"], e["serial"]) for e in fresh}
            if second >= newest - OVERLAP
        }
    counts = count_events(fresh)
    boot = _boot_id()
    lost = status.get("lost", 0)
    lost_since = None
    if previous.get("boot") == boot and isinstance(previous.get("lost"), int):
        lost_since = max(0, lost - previous["lost"])
    since = previous.get("at") if isinstance(previous.get("at"), int | float) else None
    summary = {
        "since": since,
        **counts,
        "enabled": min(max(status["enabled"], 0), 2),
        "daemon": "running" if status.get("pid", 0) > 0 else "stopped",
        "lost": lost,
        "lost_since": lost_since,
        "backlog": status.get("backlog", 0),
    }
    body = {"at": now, "kernel_audit": summary}
    DeviceHealth.model_validate(body)
    state = {"at": now, "boot": boot, "lost": lost, "second": newest}
    state["counted"] = sorted([second, serial] for second, serial in counted)
    tmp = state_file.with_name(state_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(state, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, state_file)
    return body


# ---- file integrity (AIDE) ----------------------------------------------------------------


def parse_aide_report(report: dict[str, Any], exit_status: int) -> dict[str, Any]:
    """The integrity result from AIDE's JSON report (``report_format=json``)."""
    entries = report.get("number_of_entries") or {}
    changes: list[dict[str, str]] = []
    counts = {}
    for kind in ("added", "removed", "changed"):
        listed = report.get(kind) or {}
        counts[kind] = int(entries.get(kind, len(listed)))
        for path in listed:
            if path == DATA_VOLUME or path.startswith(DATA_VOLUME + "/"):
                continue  # never in the baseline; never named, whatever AIDE says
            changes.append({"path": path, "change": kind})
    changes.sort(key=lambda c: (c["path"], c["change"]))
    database = None
    for digests in (report.get("databases") or {}).values():
        if isinstance(digests, dict) and isinstance(digests.get("sha256"), str):
            database = digests["sha256"]
            break
    total = sum(counts.values())
    return {
        "ok": total == 0,
        "exit_status": exit_status,
        "entries": int(entries.get("total", 0)),
        **counts,
        "paths": [c for c in changes if len(c["path"]) <= 511][:INTEGRITY_PATHS_MAX],
        "database": database,
    }


def file_integrity_check(
    config: Path, *, aide: str = "aide", limit: str | None = None, now: float | None = None
) -> tuple[dict[str, Any], int]:
    """Run ``aide --check`` with the given configuration (``limit``: AIDE's ``--limit``, a
    regular expression of the paths to check); the health body and AIDE's status."""
    now = time.time() if now is None else now
    failed = {"ok": False, "entries": 0, "added": 0, "removed": 0, "changed": 0}
    command = [aide, "--config", str(config), "--check", "-B", "report_format=json"]
    command += ["--limit", limit] if limit else []
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=6 * 3600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("aide did not run: %s", exc.__class__.__name__)
        body = {**failed, "exit_status": 255, "error": "aide-failed"}
        return {"at": now, "integrity": body}, 255
    status = done.returncode
    if status >= AIDE_ERROR:
        # AIDE's own words go to the journal (root's, in memory), not to the hub.
        log.error("aide --check failed (exit %d): %s", status, done.stderr.strip()[:2000])
        error = "no-baseline" if status == 17 else "aide-failed"
        return {"at": now, "integrity": {**failed, "exit_status": status, "error": error}}, status
    try:
        result = parse_aide_report(json.loads(done.stdout), status)
    except (ValueError, TypeError, AttributeError):
        log.error("aide's report is not the JSON it should be (exit %d)", status)
        body = {**failed, "exit_status": status, "error": "unreadable-report"}
        return {"at": now, "integrity": body}, status or 255
    if result["ok"] != (status == 0):
        log.error("aide's exit status %d and its report disagree", status)
        body = {**failed, "exit_status": status, "error": "unreadable-report"}
        return {"at": now, "integrity": body}, status or 255
    return {"at": now, "integrity": result}, status


# ---- command line (run as root by the integrity role's units) -----------------------------


def cmd_audit_summary(args: argparse.Namespace) -> int:
    body = kernel_audit_summary(args.state, args.input)
    write_report(args.out, body, args.group or None)
    summary = body["kernel_audit"]
    print(
        f"kernel audit: {summary['events']} events since the last summary, keys "
        f"{summary['keys']}, lost {summary['lost']}, auditd {summary['daemon']}, "
        f"enabled {summary['enabled']}"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    body, status = file_integrity_check(args.aide_config, aide=args.aide, limit=args.limit)
    write_report(args.out, body, args.group or None)
    result = body["integrity"]
    if result["ok"]:
        print(f"file integrity: no change in {result['entries']} entries")
    elif result.get("error"):
        print(f"file integrity: the check failed ({result['error']}, exit {status})")
    else:
        print(
            f"file integrity: {result['added']} added, {result['removed']} removed, "
            f"{result['changed']} changed (AIDE exit {status})"
        )
        for change in result["paths"]:
            print(f"  {change['change']}: {change['path']}")
    return status


def add_integrity_commands(sub: Any) -> None:
    integrity = sub.add_parser(
        "integrity", help="the kernel audit summary and file-integrity check (root)"
    ).add_subparsers(dest="integrity_cmd", required=True)
    summary = integrity.add_parser(
        "audit-summary", help="summarise the kernel audit trail since the last summary"
    )
    summary.add_argument(
        "--state", type=Path, required=True, help="what the last summary counted (root's)"
    )
    summary.add_argument(
        "--input", type=Path, help="an audit log file or folder (default: auditd.conf's log)"
    )
    summary.add_argument("--out", type=Path, default=REPORTS_DIR / KERNEL_AUDIT_REPORT)
    summary.add_argument("--group", default=REPORTS_GROUP, help="the group that may read it")
    summary.set_defaults(standalone=_guarded(cmd_audit_summary))
    check = integrity.add_parser("check", help="check the file system against AIDE's baseline")
    check.add_argument("--aide-config", type=Path, default=Path("/etc/aide/aide.conf"))
    check.add_argument("--aide", default="aide")
    check.add_argument("--limit", help="check only the paths this regular expression matches")
    check.add_argument("--out", type=Path, default=REPORTS_DIR / FILE_INTEGRITY_REPORT)
    check.add_argument("--group", default=REPORTS_GROUP, help="the group that may read it")
    check.set_defaults(standalone=_guarded(cmd_check))


def _guarded(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = command(args)
            return result
        except (IntegrityError, OSError, ValidationError) as exc:
            print(f"fieldkit integrity: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            return 1

    return run
