"""Bus messages of the antivirus service.

Requests (``<sender>/req/antivirus/<op>``):
  ``gate``    GateRequest   → GateReply      may a session start? (the kiosk asks at session start)
  ``update``  UpdateRequest → Accepted       run freshclam now; the outcome follows as an event
  ``scan``    ScanRequest   → Accepted       scan the policy's scope now; the report follows
  ``status``  StatusRequest → AntivirusHealth

Events (for sync to forward to the hub as device health; never retained):
  ``antivirus/evt/definitions``  DefinitionsUpdate   after every freshclam run, failed or not
  ``antivirus/evt/scan``         ScanReport          after every scan, clean or not
  ``antivirus/evt/finding``      Finding             one per detection
  ``antivirus/evt/health``       AntivirusHealth     after each of the above: the gate's view
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fieldkit.messages import Message
from fieldkit.models import Strict

GateReason = Literal[
    "ok", "no-definitions", "definitions-missing", "definitions-stale", "threat-found"
]


class DatabaseState(Strict):
    """One definitions database as its own header describes it."""

    name: str
    file: str
    version: int | None
    signatures: int | None
    built_at: float | None  # Unix seconds from the database header; None if the file is undated


class GateRequest(Message):
    type: Literal["av-gate"] = "av-gate"


class GateReply(Message):
    """Whether a session may start, and if not, why — in plain Japanese and English."""

    type: Literal["av-gate-result"] = "av-gate-result"
    allowed: bool
    reason: GateReason
    message_ja: str
    message_en: str
    definitions_built_at: float | None
    definitions_age_hours: float | None
    max_age_hours: float
    missing: list[str] = Field(default_factory=list)
    last_update_ok: bool | None = None
    checked_at: float


class UpdateRequest(Message):
    type: Literal["av-update"] = "av-update"


class ScanRequest(Message):
    type: Literal["av-scan"] = "av-scan"


class Accepted(Message):
    type: Literal["av-accepted"] = "av-accepted"
    job: Literal["update", "scan"]
    run_id: str


class StatusRequest(Message):
    type: Literal["av-status"] = "av-status"


class DefinitionsUpdate(Message):
    """The outcome of one freshclam run; on failure the databases listed are the old ones."""

    type: Literal["av-definitions"] = "av-definitions"
    device_id: str
    run_id: str
    ok: bool
    updated: list[str]
    errors: list[str]
    databases: list[DatabaseState]
    definitions_built_at: float | None
    started_at: float
    finished_at: float


class FindingItem(Strict):
    path: str
    signature: str


class ScanReport(Message):
    """One scan of the policy's scope. ``completed`` is false if clamscan could not finish."""

    type: Literal["av-scan-report"] = "av-scan-report"
    device_id: str
    run_id: str
    completed: bool
    scanned: list[str]
    skipped: list[str]  # scope paths that do not exist on this device
    findings: list[FindingItem]
    errors: list[str]
    definitions_built_at: float | None
    started_at: float
    finished_at: float


class Finding(Message):
    """One detection, sent on its own so the hub can flag the device at once."""

    type: Literal["av-finding"] = "av-finding"
    device_id: str
    run_id: str
    path: str
    signature: str
    detected_at: float


class AntivirusHealth(Message):
    """The device's antivirus state as the hub shows it: definitions, last update, last scan."""

    type: Literal["av-health"] = "av-health"
    device_id: str
    gate: GateReply
    databases: list[DatabaseState]
    last_update: DefinitionsUpdate | None
    last_scan: ScanReport | None
