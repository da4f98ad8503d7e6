"""The tablet's kernel audit summary and file-integrity result reach the hub (issue 19 items 2
and 3; R14, R18, R25, R28): real auditd and ausearch, real AIDE against a tree of its own,
sync as a service on the local broker, the hub broker, ingest and the hub web app.

Both ways: a changed file → a failed check, a report, a red device row and one incident draft
at the hub; no change → an OK row and no draft. A summary never names a file or an argument.
A malformed report is refused, at the tablet (sync keeps serving) and at the hub (a refusal
naming the field; ingest keeps storing)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import HealthRow, RefusalRow
from fieldkit.hub.web.models import IncidentRow
from fieldkit.integrity import (
    FILE_INTEGRITY_REPORT,
    KERNEL_AUDIT_REPORT,
    count_events,
    file_integrity_check,
    kernel_audit_summary,
    parse_aide_report,
    read_events,
    write_report,
)
from fieldkit.pki import KitPki
from fieldkit.registry import load_specs
from fieldkit.runner import ServiceContext, start_service, stop_service
from fieldkit.sync.messages import OutboxStatus, StatusRequest
from fieldkit.sync.reports import ReportError, ReportForwarder, read_report
from fieldkit.sync.wire import DeviceHealth, up_topic
from tests.conftest import BusFactory
from tests.hubkit import DeviceClient, IngestFactory, signed_record, wait_for
from tests.hubweb import ClientFactory
from tests.support.sync import tablet_config

AIDE = shutil.which("aide")
AUDITD = shutil.which("auditd")
AUSEARCH = shutil.which("ausearch")
AUDITCTL = shutil.which("auditctl")
needs_aide = pytest.mark.skipif(AIDE is None, reason="aide is not installed (./dev.sh installs it)")
PLANTED = "applicant-Yamada-Taro-1985.txt"  # a file name that must never leave the tablet
CANARY = "fieldkit-argument-canary-4711"


# ---- AIDE, for real, on a tree of its own ------------------------------------------------


class AideTree:
    """A small tree, an AIDE configuration for it, and its baseline made by ``aide --init``."""

    def __init__(self, root: Path) -> None:
        self.tree = root / "tree"
        self.db = root / "db"
        (self.tree / "etc").mkdir(parents=True)
        (self.tree / "usr" / "sbin").mkdir(parents=True)
        self.db.mkdir()
        (self.tree / "etc" / "issue.net").write_text("Authorised use only.\n")
        (self.tree / "etc" / "nftables.conf").write_text("flush ruleset\n")
        (self.tree / "usr" / "sbin" / "tool").write_text("#!/bin/sh\n")
        self.config = root / "aide.conf"
        self.config.write_text(
            f"database_in=file:{self.db}/aide.db\n"
            f"database_out=file:{self.db}/aide.db.new\n"
            "gzip_dbout=no\nreport_url=stdout\n"
            "Image = p+u+g+s+n+m+sha256+sha512\n"
            f"{self.tree} Image\n"
        )

    def baseline(self) -> None:
        assert AIDE is not None
        subprocess.run(
            [AIDE, "--config", str(self.config), "--init"], check=True, capture_output=True
        )
        (self.db / "aide.db.new").replace(self.db / "aide.db")

    def tamper(self) -> None:
        (self.tree / "etc" / "issue.net").write_text("Welcome, everyone.\n")
        (self.tree / "usr" / "sbin" / "fieldkit-tamper").write_text("#!/bin/sh\nid\n")


@pytest.fixture
def aide_tree(tmp_path: Path) -> AideTree:
    if AIDE is None:
        pytest.skip("aide is not installed (./dev.sh installs it)")
    tree = AideTree(tmp_path / "aide")
    tree.baseline()
    return tree


@needs_aide
def test_aide_reports_a_change_and_only_a_change(aide_tree: AideTree) -> None:
    body, status = file_integrity_check(aide_tree.config)
    assert status == 0
    clean = DeviceHealth.model_validate(body).integrity
    assert clean is not None and clean.ok and clean.paths == [] and clean.entries >= 5
    assert clean.database is not None

    aide_tree.tamper()
    body, status = file_integrity_check(aide_tree.config)
    assert status == 5  # AIDE: 1 added + 4 changed
    changed = DeviceHealth.model_validate(body).integrity
    assert changed is not None and not changed.ok
    assert (changed.added, changed.removed) == (1, 0) and changed.changed in (1, 2)
    found = {(p.path, p.change) for p in changed.paths}
    assert (str(aide_tree.tree / "usr/sbin/fieldkit-tamper"), "added") in found
    assert (str(aide_tree.tree / "etc/issue.net"), "changed") in found


@needs_aide
def test_the_check_command_fails_the_unit_and_writes_the_report(
    aide_tree: AideTree, tmp_path: Path
) -> None:
    """What ``fieldkit-integrity-check.service`` runs: it exits with AIDE's status (the unit
    fails on a change) and leaves the report for sync, 0640."""
    out = tmp_path / "reports" / FILE_INTEGRITY_REPORT
    command = [sys.executable, "-m", "fieldkit", "integrity", "check", "--out", str(out)]
    command += ["--aide-config", str(aide_tree.config), "--group", "root"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["integrity"]["ok"] is True
    assert out.stat().st_mode & 0o777 == 0o640
    aide_tree.tamper()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 5
    assert "fieldkit-tamper" in done.stdout
    report = json.loads(out.read_text())["integrity"]
    assert report["ok"] is False and report["added"] == 1


def test_the_integrity_report_caps_its_paths_and_never_names_the_data_volume() -> None:
    report = {
        "number_of_entries": {"total": 900, "added": 40, "changed": 1},
        "added": {f"/usr/local/bin/x{i:02d}": "f++++" for i in range(39)}
        | {"/var/lib/fieldkit/outbox/secret": "f++++"},
        "changed": {"/etc/passwd": "f > ..."},
    }
    result = parse_aide_report(report, 5)
    health = DeviceHealth.model_validate({"at": 1.0, "integrity": result})
    assert health.integrity is not None and len(health.integrity.paths) == 20
    assert health.integrity.added == 40 and health.integrity.changed == 1
    assert not any("/var/lib/fieldkit" in p.path for p in health.integrity.paths)


@pytest.mark.parametrize(
    ("integrity", "field"),
    [
        ({"ok": True, "exit_status": 0, "entries": 1, "added": 1, "removed": 0, "changed": 0},
         "integrity"),
        ({"ok": False, "exit_status": 4, "entries": 1, "added": 0, "removed": 0, "changed": 1,
          "paths": [{"path": "/var/lib/fieldkit/enrol/x", "change": "changed"}]},
         "integrity.paths.0.path"),
        ({"ok": False, "exit_status": 4, "entries": 1, "added": 0, "removed": 0, "changed": 1,
          "paths": [{"path": "etc/passwd", "change": "changed"}]}, "integrity.paths.0.path"),
        ({"ok": False, "exit_status": 4, "entries": 1, "added": 0, "removed": 0, "changed": 1,
          "note": "x"}, "integrity.note"),
    ],
)  # fmt: skip
def test_a_malformed_integrity_report_is_refused_naming_the_field(
    integrity: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        DeviceHealth.model_validate({"at": 1.0, "integrity": integrity})


# ---- the kernel audit trail, for real ----------------------------------------------------


def audit_state() -> dict[str, int]:
    assert AUDITCTL is not None
    done = subprocess.run([AUDITCTL, "-s"], capture_output=True, text=True, check=True)
    return {
        line.split()[0]: int(line.split()[1])
        for line in done.stdout.splitlines()
        if len(line.split()) > 1 and line.split()[1].isdigit()
    }


class RealAuditd:
    """auditd with a configuration and log folder of its own, and rules on a folder of the
    test's, keyed as the tablet's rules are. Everything it adds is removed at the end and the
    kernel's audit state put back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "log"
        self.logs.mkdir(parents=True)
        self.logs.chmod(0o700)
        self.watched = root / "watched"
        self.watched.mkdir()
        (self.watched / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (self.root / "auditd.conf").write_text(
            f"log_file = {self.logs}/audit.log\nlog_group = root\nlog_format = ENRICHED\n"
            "flush = DATA\nmax_log_file = 8\nnum_logs = 5\nmax_log_file_action = ROTATE\n"
            "space_left = 2\nspace_left_action = SYSLOG\nadmin_space_left = 1\n"
            "admin_space_left_action = SUSPEND\ndisk_full_action = SUSPEND\n"
            "disk_error_action = SYSLOG\nlocal_events = yes\nwrite_logs = yes\n"
        )
        self.rules = [
            ["-a", "always,exclude", "-F", "msgtype=EXECVE"],
            ["-a", "always,exclude", "-F", "msgtype=PROCTITLE"],
            ["-w", str(self.watched / "passwd"), "-p", "wa", "-k", "identity"],
            ["-w", str(self.watched / "policy"), "-p", "wa", "-k", "fieldkit-policy"],
            ["-w", str(self.watched / "spare"), "-p", "wa", "-k", "fieldkit-test-other"],
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.enabled_before = 0

    def start(self) -> None:
        assert AUDITD is not None and AUDITCTL is not None
        before = audit_state()
        if before.get("pid", 0) != 0:
            pytest.skip("another audit daemon holds the kernel's audit socket")
        self.enabled_before = before.get("enabled", 0)
        if self.enabled_before == 2:
            pytest.skip("the kernel's audit rules are locked (enabled 2)")
        self.process = subprocess.Popen(
            [AUDITD, "-n", "-c", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: audit_state().get("pid", 0) == self.process.pid, what="auditd up")  # type: ignore[union-attr]
        for rule in self.rules:
            subprocess.run([AUDITCTL, *rule], check=True, capture_output=True)
        # auditd numbers its own events (DAEMON_START) apart from the kernel's, and ausearch's
        # checkpoint orders events by second, then number: a kernel event in the same second as
        # a daemon event it checkpointed at would look older. The tablet's boot has the same
        # second's blind spot; the test starts its events in the next second.
        time.sleep(1.1)

    def stop(self) -> None:
        assert AUDITCTL is not None
        for rule in self.rules:
            removal = ["-d" if rule[0] == "-a" else "-W", *rule[1:]]
            subprocess.run([AUDITCTL, *removal], check=False, capture_output=True)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        subprocess.run([AUDITCTL, "-e", str(self.enabled_before)], check=False, capture_output=True)

    def settle(self) -> None:
        """ausearch counts an event once a later one shows it complete: one more event."""
        (self.watched / "policy").write_text(str(time.time()))
        time.sleep(1.5)


@pytest.fixture
def auditd(tmp_path: Path) -> Iterator[RealAuditd]:
    if None in (AUDITD, AUSEARCH, AUDITCTL):
        pytest.skip("auditd is not installed (./dev.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("the kernel audit trail needs root")
    try:
        audit_state()
    except subprocess.CalledProcessError:
        pytest.skip("no kernel audit here (auditctl -s fails)")
    daemon = RealAuditd(tmp_path / "audit")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def test_the_kernel_audit_summary_counts_keys_since_the_last_and_names_no_file(
    auditd: RealAuditd, tmp_path: Path
) -> None:
    state = tmp_path / "summary.state"
    with (auditd.watched / "passwd").open("a") as handle:
        handle.write("applicant:x:1000:1000::/home/a:/bin/sh\n")
    (auditd.watched / "policy").write_text("policy 1\n")
    (auditd.watched / "spare").write_text("spare\n")
    (auditd.watched / PLANTED).write_text("not watched\n")
    # A command with an argument, on a watched file: the argument must never be summarised.
    subprocess.run(["touch", str(auditd.watched / "policy"), "-d", f"@{len(CANARY)}"], check=True)
    subprocess.run(["sh", "-c", f"echo {CANARY} >> {auditd.watched / 'policy'}"], check=True)
    auditd.settle()

    first = kernel_audit_summary(state, auditd.logs)
    summary = DeviceHealth.model_validate(first).kernel_audit
    assert summary is not None
    assert summary.since is None
    assert summary.keys.get("identity", 0) >= 1
    assert summary.keys.get("fieldkit-policy", 0) >= 3
    assert summary.keys.get("other", 0) >= 1  # a key no tablet rule has
    assert set(summary.keys) <= {"identity", "fieldkit-policy", "other"}
    assert summary.daemon == "running" and summary.enabled in (1, 2)
    assert summary.lost_since is None
    text = json.dumps(first)
    for secret in (PLANTED, CANARY, "Yamada", "applicant", str(auditd.watched)):
        assert secret not in text
    # The raw log does hold the file name: the summary is what leaves it out.
    raw = b"".join(p.read_bytes() for p in auditd.logs.iterdir())
    assert b"passwd" in raw and CANARY.encode() not in raw  # EXECVE dropped in the kernel

    # Nothing new but one settling event: the next summary does not count the first's again.
    auditd.settle()
    second = kernel_audit_summary(state, auditd.logs)["kernel_audit"]
    assert second["since"] == first["at"]
    assert second["keys"].get("identity", 0) == 0
    assert second["keys"].get("fieldkit-policy", 0) <= 2
    assert second["lost_since"] == 0

    # One more identity change is counted once.
    (auditd.watched / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    auditd.settle()
    third_body = kernel_audit_summary(state, auditd.logs)
    third = third_body["kernel_audit"]
    assert third["keys"].get("identity", 0) == 1

    # What fieldkit-audit-summary.service runs: the same, into the report sync reads (0640).
    (auditd.watched / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    auditd.settle()
    out = tmp_path / "reports" / KERNEL_AUDIT_REPORT
    command = [sys.executable, "-m", "fieldkit", "integrity", "audit-summary", "--state"]
    command += [str(state), "--input", str(auditd.logs), "--out", str(out), "--group", "root"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o640
    fourth = json.loads(out.read_text())["kernel_audit"]
    assert fourth["keys"].get("identity", 0) == 1 and fourth["since"] == third_body["at"]


def test_the_summary_counts_keys_and_programs_from_ausearch_csv() -> None:
    """The parsing on ausearch's CSV (header and rows as audit 3.0.9 wrote them here, in the C
    locale and UTC): an unknown program and an unknown key are counted as "other", never named;
    a rule being loaded (CONFIG_CHANGE carries its key) is not a hit of the rule."""
    csv_text = (
        "NODE,EVENT,DATE,TIME,SERIAL_NUM,EVENT_KIND,SESSION,SUBJ_PRIME,SUBJ_SEC,SUBJ_KIND,"
        "ACTION,RESULT,OBJ_PRIME,OBJ_SEC,OBJ_KIND,HOW,KEY\n"
        ",SYSCALL,12/05/26,05:57:17,12,audit-rule,unset,system,root,privileged-acct,"
        f"opened-file,success,/home/kiosk/{PLANTED},2589112,file,/home/kiosk/run.sh,identity\n"
        ",SYSCALL,12/05/26,05:57:17,13,audit-rule,unset,system,root,privileged-acct,"
        "executed,failed,/usr/bin/kmod,1,file,/usr/bin/kmod,kernel_modules\n"
        ",ANOM_RBAC_INTEGRITY_FAIL,12/05/26,05:58:23,15,integrity,unset,system,root,"
        "privileged-acct,tested-file-system-integrity-of,failed,?,,file-system,/usr/bin/aide,\n"
        ",SYSCALL,12/05/26,05:58:26,16,audit-rule,unset,system,root,privileged-acct,"
        "deleted,success,/tmp/x,1,file,/usr/bin/rm,my-own-key\n"
        ",CONFIG_CHANGE,12/05/26,06:04:52,200,configuration,unset,system,root,privileged-acct,"
        "add_rule,success,identity,,audit-config,/usr/sbin/auditctl,identity\n"
    )
    counts = count_events(read_events(csv_text))
    assert counts["events"] == 5 and counts["failed"] == 2 and counts["anomalies"] == 1
    assert counts["keys"] == {"identity": 1, "kernel_modules": 1, "other": 1}
    assert counts["programs"] == {"/usr/bin/kmod": 1, "other": 2}
    assert PLANTED not in json.dumps(counts)
    assert read_events(csv_text)[0]["second"] == 1796450237  # 2026-12-05 05:57:17 UTC
    assert set(read_events(csv_text)[0]) == {"event", "result", "how", "key", "second", "serial"}


@pytest.mark.parametrize(
    ("kernel_audit", "field"),
    [
        ({"keys": {"/home/kiosk/x": 1}}, "kernel_audit.keys"),
        ({"programs": {"/home/kiosk/run.sh": 1}}, "kernel_audit.programs"),
        ({"keys": {"identity": -1}}, "kernel_audit.keys"),
        ({"enabled": 3}, "kernel_audit.enabled"),
        ({"daemon": "maybe"}, "kernel_audit.daemon"),
        ({"argv": "a b"}, "kernel_audit.argv"),
    ],
)
def test_a_malformed_audit_summary_is_refused_naming_the_field(
    kernel_audit: dict[str, Any], field: str
) -> None:
    good = {"events": 1, "failed": 0, "anomalies": 0, "enabled": 2, "daemon": "running"}
    good |= {"lost": 0, "backlog": 0}
    DeviceHealth.model_validate({"at": 1.0, "kernel_audit": good})
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        DeviceHealth.model_validate({"at": 1.0, "kernel_audit": good | kernel_audit})


# ---- to the hub: sync, the hub broker, ingest, the web app -------------------------------


def audit_body(at: float, **changes: Any) -> dict[str, Any]:
    summary = {"since": at - 900, "events": 7, "failed": 1, "anomalies": 0, "enabled": 2}
    summary |= {"daemon": "running", "lost": 0, "lost_since": 0, "backlog": 0}
    summary |= {"keys": {"identity": 2, "fieldkit-policy": 5}, "programs": {"/usr/bin/su": 1}}
    return {"at": at, "kernel_audit": summary | changes}


@pytest.fixture
def reporting_tablet(
    broker: LocalBroker, tmp_path: Path, pki: KitPki, hub_broker: HubBroker
) -> Iterator[tuple[ServiceContext, Path]]:
    reports = tmp_path / "reports"
    reports.mkdir()
    (spec,) = load_specs(["sync"])
    config = tablet_config(
        tmp_path, pki, hub_broker.port, reports=f'"{reports}"', reports_poll="0.2"
    )
    ctx = start_service(spec, config)
    yield ctx, reports
    stop_service(ctx)


def health_rows(web_app: Flask) -> list[HealthRow]:
    from fieldkit.hub.web.extensions import hubweb

    with Session(hubweb(web_app).engine) as session:
        return list(session.scalars(select(HealthRow).order_by(HealthRow.at)))


def integrity_drafts(web_app: Flask) -> list[IncidentRow]:
    from fieldkit.hub.web.extensions import hubweb

    with Session(hubweb(web_app).engine) as session:
        rows = session.scalars(select(IncidentRow).where(IncidentRow.source.like("integrity:%")))
        return list(rows)


def device_row(page: str, device: str = "tab-a") -> str:
    start = page.index(f"<td>{device}</td>")
    return page[page.rindex("<tr", 0, start) : page.index("</tr>", start)]


@needs_aide
def test_a_file_changed_on_the_tablet_is_an_incident_at_the_hub_and_a_clean_check_is_ok(
    reporting_tablet: tuple[ServiceContext, Path],
    make_ingest: IngestFactory,
    database_url: str,
    web_app: Flask,
    client_as: ClientFactory,
    aide_tree: AideTree,
) -> None:
    _, reports = reporting_tablet
    make_ingest(database_url)
    auditor = client_as("auditor")

    # No change: the check passes, the device row says so, no incident.
    body, status = file_integrity_check(aide_tree.config)
    assert status == 0
    write_report(reports / FILE_INTEGRITY_REPORT, body, group=None)
    write_report(reports / KERNEL_AUDIT_REPORT, audit_body(time.time()), group=None)
    wait_for(lambda: len(health_rows(web_app)) == 2, what="both reports at the hub")
    page = auditor.get("/devices").get_data(as_text=True)
    row = device_row(page)
    assert "変更なし" in row and "alarm-row" not in row
    assert "identity 2" in row and "fieldkit-policy 5" in row and "稼働" in row
    assert auditor.get("/incidents").status_code == 200
    assert integrity_drafts(web_app) == []

    # A change: the check fails, the row is red with what changed, one incident draft.
    aide_tree.tamper()
    body, status = file_integrity_check(aide_tree.config)
    assert status != 0
    time.sleep(0.05)
    write_report(reports / FILE_INTEGRITY_REPORT, body, group=None)
    wait_for(lambda: len(health_rows(web_app)) == 3, what="the failed check at the hub")
    page = auditor.get("/devices?lang=en").get_data(as_text=True)
    row = device_row(page)
    # 1 or 2 changed: the folder the file was added to counts when its time moved a second
    assert "alarm-row" in row and "CHANGED: 1 added, 0 removed, " in row, row
    assert "fieldkit-tamper" in row
    incidents = auditor.get("/incidents").get_data(as_text=True)
    (draft,) = integrity_drafts(web_app)
    assert "ファイル改ざん検査" in draft.what and "fieldkit-tamper" in draft.what
    assert draft.status == "draft" and "ファイル改ざん検査" in incidents

    # The next daily check finds the same change: still one incident.
    body, _ = file_integrity_check(aide_tree.config)
    write_report(reports / FILE_INTEGRITY_REPORT, body, group=None)
    wait_for(lambda: len(health_rows(web_app)) == 4, what="the second failed check")
    auditor.get("/incidents")
    assert len(integrity_drafts(web_app)) == 1

    # Dealt with (the baseline made again): the next check is clean and the row OK again.
    aide_tree.baseline()
    body, status = file_integrity_check(aide_tree.config)
    assert status == 0
    write_report(reports / FILE_INTEGRITY_REPORT, body, group=None)
    wait_for(lambda: len(health_rows(web_app)) == 5, what="the clean check")
    row = device_row(auditor.get("/devices?lang=ja").get_data(as_text=True))
    assert "変更なし" in row and "alarm-row" not in row
    assert len(integrity_drafts(web_app)) == 1  # the incident stays on record


def test_auditd_stopped_or_lost_events_turn_the_device_row_red(
    reporting_tablet: tuple[ServiceContext, Path],
    make_ingest: IngestFactory,
    database_url: str,
    web_app: Flask,
    client_as: ClientFactory,
) -> None:
    _, reports = reporting_tablet
    make_ingest(database_url)
    write_report(reports / KERNEL_AUDIT_REPORT, audit_body(time.time()), group=None)
    wait_for(lambda: len(health_rows(web_app)) == 1, what="summary at the hub")
    auditor = client_as("auditor")
    assert "alarm-row" not in device_row(auditor.get("/devices").get_data(as_text=True))
    time.sleep(0.05)
    stopped = audit_body(time.time(), daemon="stopped", lost=12, lost_since=12)
    write_report(reports / KERNEL_AUDIT_REPORT, stopped, group=None)
    wait_for(lambda: len(health_rows(web_app)) == 2, what="second summary at the hub")
    row = device_row(auditor.get("/devices?lang=en").get_data(as_text=True))
    assert "alarm-row" in row and "auditd STOPPED" in row and "lost 12" in row


def test_a_malformed_report_is_refused_on_the_tablet_and_sync_keeps_serving(
    reporting_tablet: tuple[ServiceContext, Path],
    make_bus: BusFactory,
    make_ingest: IngestFactory,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx, reports = reporting_tablet
    ingest = make_ingest(database_url)
    bad = audit_body(time.time())
    bad["kernel_audit"]["programs"] = {f"/home/kiosk/{PLANTED}": 1}
    caplog.set_level(logging.WARNING, logger="fieldkit.sync.reports")
    (reports / KERNEL_AUDIT_REPORT).write_text(json.dumps(bad))
    (reports / FILE_INTEGRITY_REPORT).write_text("{not json")
    wait_for(
        lambda: "kernel-audit.json refused" in caplog.text and "not JSON" in caplog.text,
        what="both refusals logged",
    )
    assert "kernel_audit.programs" in caplog.text
    assert PLANTED not in caplog.text  # the field is named, never the value
    tester: Bus = make_bus("tester")
    status = tester.request("sync", "status", StatusRequest(), OutboxStatus)
    assert status.pending == 0 and status.acked_total == 0

    # A good report after them is sent, once, even when polled again.
    good = audit_body(time.time())
    write_report(reports / KERNEL_AUDIT_REPORT, good, group=None)

    def stored() -> int:
        with Session(ingest.engine) as session:
            return len(list(session.scalars(select(HealthRow))))

    wait_for(lambda: stored() == 1, what="the good report at the hub")
    forwarder: ReportForwarder = ctx.reports  # type: ignore[attr-defined]
    assert forwarder.poll() == []
    time.sleep(0.5)
    assert stored() == 1


def test_a_report_holding_more_than_its_part_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KERNEL_AUDIT_REPORT
    body = audit_body(1.0) | {"detail": {"note": "x"}}
    path.write_text(json.dumps(body))
    with pytest.raises(ReportError, match="more than"):
        read_report(path, "kernel_audit")
    path.write_text(json.dumps({"at": 1.0}))
    with pytest.raises(ReportError, match="no kernel_audit"):
        read_report(path, "kernel_audit")


def test_the_hub_refuses_a_malformed_summary_and_keeps_storing(
    pki: KitPki, hub_broker: HubBroker, make_ingest: IngestFactory, database_url: str
) -> None:
    """A tablet (or anything holding its key) sending a summary that names a file: refused
    with the field named, recorded as a refusal; the next good record is stored."""
    ingest = make_ingest(database_url)
    device = DeviceClient(pki, "tab-a", hub_broker.port)
    device.connect()
    try:
        bad = audit_body(time.time())
        bad["kernel_audit"]["keys"] = {PLANTED: 3}
        device.publish(up_topic("tab-a"), signed_record(pki, "tab-a", "health", body=bad).encode())
        tampered = {"at": time.time(), "integrity": {"ok": True, "exit_status": 5, "entries": 9}}
        tampered["integrity"] |= {"added": 1, "removed": 0, "changed": 0}
        record = signed_record(pki, "tab-a", "health", body=tampered)
        device.publish(up_topic("tab-a"), record.encode())
        good = signed_record(pki, "tab-a", "health", body=audit_body(time.time()))
        device.publish(up_topic("tab-a"), good.encode())
        wait_for(lambda: len(device.acks) == 3, what="three acks")
        outcomes = [a.outcome for a in device.acks]
        assert outcomes == ["refused", "refused", "stored"]
        assert "kernel_audit.keys" in device.acks[0].reason
        assert PLANTED not in device.acks[0].reason
        assert "integrity" in device.acks[1].reason
        with Session(ingest.engine) as session:
            refusals = list(session.scalars(select(RefusalRow)))
            assert len(refusals) == 2
            assert all(PLANTED not in r.reason for r in refusals)
            assert len(list(session.scalars(select(HealthRow)))) == 1
    finally:
        with contextlib.suppress(Exception):
            device.close()


def test_without_the_allow_list_a_file_name_would_reach_the_hub(
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other way round: with the allow-list check switched off, the same summary naming a
    file is stored at the hub, so the check is what keeps it out."""
    import fieldkit.sync.wire as wire

    monkeypatch.setattr(wire, "_known", lambda values, allowed, what: values)
    ingest = make_ingest(database_url)
    device = DeviceClient(pki, "tab-a", hub_broker.port)
    device.connect()
    try:
        bad = audit_body(time.time())
        bad["kernel_audit"]["keys"] = {PLANTED: 3}
        device.publish(up_topic("tab-a"), signed_record(pki, "tab-a", "health", body=bad).encode())
        wait_for(lambda: len(device.acks) == 1, what="ack")
        assert device.acks[0].outcome == "stored"
        with Session(ingest.engine) as session:
            (row,) = session.scalars(select(HealthRow))
            assert PLANTED in json.dumps(row.report)
    finally:
        with contextlib.suppress(Exception):
            device.close()
