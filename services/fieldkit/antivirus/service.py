"""The antivirus service: keeps definitions current from the hub, scans, and gates sessions.

One worker thread runs freshclam ``checks_per_day`` times a day and clamscan every
``scan_interval_hours`` (and both on request), so the bus thread never waits on them. The gate
is answered on the bus thread: it only reads the database headers, which takes milliseconds.
The last update and scan are kept in a small state file, so a restart does not forget a finding.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from fieldkit.antivirus.database import DatabaseError, DatabaseInfo, list_databases
from fieldkit.antivirus.engine import EngineError, run_clamscan, run_freshclam
from fieldkit.antivirus.gate import assess, currency_database
from fieldkit.antivirus.messages import (
    Accepted,
    AntivirusHealth,
    DatabaseState,
    DefinitionsUpdate,
    Finding,
    FindingItem,
    GateReply,
    GateRequest,
    ScanReport,
    ScanRequest,
    StatusRequest,
    UpdateRequest,
)
from fieldkit.antivirus.settings import AntivirusSection
from fieldkit.bus import BusError, Incoming
from fieldkit.config import DeviceConfig
from fieldkit.models import Section
from fieldkit.runner import ServiceContext

log = logging.getLogger(__name__)

Job = Literal["update", "scan"]
STATE_FILE = "antivirus-state.json"


@dataclass(frozen=True)
class AntivirusPaths:
    database_dir: Path
    state_dir: Path

    @property
    def freshclam_conf(self) -> Path:
        return self.state_dir / "freshclam.conf"

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @classmethod
    def for_config(cls, config: DeviceConfig) -> AntivirusPaths:
        section = config.antivirus
        base = config.bus.runtime_dir / "antivirus"
        return cls(
            database_dir=section.database_dir or base / "db",
            state_dir=section.state_dir or base,
        )


class SavedState(Section):
    """What survives a restart: the last update and the last scan (evidence, no personal data)."""

    last_update: DefinitionsUpdate | None = None
    last_scan: ScanReport | None = None


def database_states(databases: list[DatabaseInfo]) -> list[DatabaseState]:
    return [
        DatabaseState(
            name=d.name,
            file=d.file,
            version=d.version,
            signatures=d.signatures,
            built_at=d.built_at,
        )
        for d in databases
    ]


class AntivirusService:
    """State and jobs of the antivirus service on one device."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.policy: AntivirusSection = ctx.config.antivirus
        self.device_id = ctx.config.device.id
        self.paths = AntivirusPaths.for_config(ctx.config)
        self.jobs: queue.Queue[tuple[Job, str]] = queue.Queue()
        self.lock = threading.Lock()
        self.state = self._load_state()
        self.worker = threading.Thread(target=self._work, name="antivirus-worker", daemon=True)

    # -- state ---------------------------------------------------------------------------------

    def _load_state(self) -> SavedState:
        try:
            return SavedState.model_validate_json(self.paths.state_file.read_bytes())
        except FileNotFoundError:
            return SavedState()
        except (ValidationError, OSError):
            # Keep going without history; the next scan and update rebuild it.
            log.error(
                "antivirus state file %s is unreadable; starting fresh", self.paths.state_file
            )
            return SavedState()

    def _save_state(self) -> None:
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.paths.state_file.with_suffix(".tmp")
        tmp.write_text(self.state.model_dump_json(), encoding="utf-8")
        tmp.replace(self.paths.state_file)

    def databases(self) -> list[DatabaseInfo]:
        try:
            return list_databases(self.paths.database_dir)
        except DatabaseError as exc:
            # A damaged file is not a definition: report it as if missing.
            log.error("definitions unreadable: %s", exc)
            return []

    def gate(self, now: float | None = None) -> GateReply:
        with self.lock:
            last_scan = self.state.last_scan
            last_update = self.state.last_update
        return assess(
            self.policy,
            self.databases(),
            last_scan,
            time.time() if now is None else now,
            last_update_ok=last_update.ok if last_update else None,
        )

    def health(self) -> AntivirusHealth:
        with self.lock:
            last_scan, last_update = self.state.last_scan, self.state.last_update
        return AntivirusHealth(
            device_id=self.device_id,
            gate=self.gate(),
            databases=database_states(self.databases()),
            last_update=last_update,
            last_scan=last_scan,
        )

    # -- jobs ----------------------------------------------------------------------------------

    def submit(self, job: Job) -> str:
        run_id = uuid.uuid4().hex[:16]
        self.jobs.put((job, run_id))
        return run_id

    def update(self, run_id: str) -> DefinitionsUpdate:
        """Run freshclam once; on failure the old definitions stay and the error is reported."""
        started = time.time()
        try:
            run = run_freshclam(self.policy, self.paths.database_dir, self.paths.freshclam_conf)
            ok, updated, errors = run.ok, run.updated, run.errors
        except EngineError as exc:
            ok, updated, errors = False, [], [str(exc)]
        databases = self.databases()
        latest = currency_database(self.policy, databases)
        report = DefinitionsUpdate(
            device_id=self.device_id,
            run_id=run_id,
            ok=ok,
            updated=updated,
            errors=errors,
            databases=database_states(databases),
            definitions_built_at=latest.built_at if latest else None,
            started_at=started,
            finished_at=time.time(),
        )
        if not ok:
            log.warning("definitions update failed: %s", "; ".join(errors))
        with self.lock:
            self.state.last_update = report
            self._save_state()
        self._publish("antivirus/evt/definitions", report)
        return report

    def scan(self, run_id: str) -> ScanReport:
        """Scan the policy's scope; findings are kept until a later complete scan is clean."""
        started = time.time()
        scope = self.policy.scan_paths
        present = [p for p in scope if p.exists()]
        skipped = [str(p) for p in scope if not p.exists()]
        databases = self.databases()
        latest = currency_database(self.policy, databases)
        findings: list[FindingItem] = []
        errors: list[str] = []
        completed = False
        if not scope:
            errors = ["no scan scope is configured (antivirus.scan_paths)"]
        elif not databases:
            errors = ["no definitions to scan with"]
        elif present:
            try:
                run = run_clamscan(self.policy, self.paths.database_dir, present)
                findings = [FindingItem(path=d.path, signature=d.signature) for d in run.detections]
                errors, completed = run.errors, run.completed
            except EngineError as exc:
                errors = [str(exc)]
        else:
            completed = True  # nothing of the scope exists yet: nothing to infect
        report = ScanReport(
            device_id=self.device_id,
            run_id=run_id,
            completed=completed,
            scanned=[str(p) for p in present],
            skipped=skipped,
            findings=findings,
            errors=errors,
            definitions_built_at=latest.built_at if latest else None,
            started_at=started,
            finished_at=time.time(),
        )
        # Paths are not logged: file names in writable areas are the device's business only.
        log.info("scan %s: %d finding(s), completed=%s", run_id, len(findings), completed)
        with self.lock:
            previous = self.state.last_scan
            # An incomplete scan cannot clear an earlier finding.
            if completed or findings or previous is None or not previous.findings:
                self.state.last_scan = report
            self._save_state()
        for item in findings:
            finding = Finding(
                device_id=self.device_id,
                run_id=run_id,
                path=item.path,
                signature=item.signature,
                detected_at=report.finished_at,
            )
            self._publish("antivirus/evt/finding", finding)
        self._publish("antivirus/evt/scan", report)
        return report

    def _publish(self, topic: str, message: DefinitionsUpdate | ScanReport | Finding) -> None:
        try:
            self.ctx.bus.publish(topic, message)
            self.ctx.bus.publish("antivirus/evt/health", self.health())
        except BusError as exc:
            # The state file keeps the result; the next health event carries it again.
            log.warning("could not publish %s: %s", topic, exc)

    def _work(self) -> None:
        stopping = self.ctx.stopping
        # Results are events: wait for the broker before the first job can produce one.
        while not stopping.is_set() and not self.ctx.bus.wait_connected(0.5):
            pass
        now = time.monotonic()
        update_every = 86400.0 / self.policy.checks_per_day
        scan_every = self.policy.scan_interval_hours * 3600.0
        next_update = now if self.policy.update_on_start else now + update_every
        next_scan = now + scan_every
        while not stopping.is_set():
            now = time.monotonic()
            if self.policy.mirror_url is not None and now >= next_update:
                self.jobs.put(("update", uuid.uuid4().hex[:16]))
                next_update = now + update_every
            if self.policy.scan_paths and now >= next_scan:
                self.jobs.put(("scan", uuid.uuid4().hex[:16]))
                next_scan = now + scan_every
            wait = max(0.05, min(next_update, next_scan) - now)
            try:
                job, run_id = self.jobs.get(timeout=min(wait, 1.0))
            except queue.Empty:
                continue
            if stopping.is_set():
                break
            try:
                self.update(run_id) if job == "update" else self.scan(run_id)
            except Exception:
                log.exception("antivirus %s job failed", job)

    # -- bus handlers --------------------------------------------------------------------------

    def on_gate(self, _: GateRequest, __: Incoming) -> GateReply:
        reply = self.gate()
        log.info("gate: %s", reply.reason)
        return reply

    def on_update(self, _: UpdateRequest, __: Incoming) -> Accepted:
        return Accepted(job="update", run_id=self.submit("update"))

    def on_scan(self, _: ScanRequest, __: Incoming) -> Accepted:
        return Accepted(job="scan", run_id=self.submit("scan"))

    def on_status(self, _: StatusRequest, __: Incoming) -> AntivirusHealth:
        return self.health()


def setup(ctx: ServiceContext) -> None:
    service = AntivirusService(ctx)
    bus = ctx.bus
    bus.handle_request("gate", GateRequest, service.on_gate)
    bus.handle_request("update", UpdateRequest, service.on_update)
    bus.handle_request("scan", ScanRequest, service.on_scan)
    bus.handle_request("status", StatusRequest, service.on_status)
    service.worker.start()

    def stop() -> None:
        ctx.stopping.set()
        service.worker.join(timeout=5)

    ctx.on_stop(stop)
