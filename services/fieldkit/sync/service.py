"""The ``sync`` service: accepts records on the local bus and hands them to the courier, which
keeps them in the outbox and delivers them to the hub (``courier``; R15, R16, R21, R23, R24)."""

from __future__ import annotations

import logging
import threading
import time

from fieldkit.antivirus.messages import AntivirusHealth, Finding
from fieldkit.bus import Incoming
from fieldkit.config import DeviceConfig
from fieldkit.messages import Message, MessageError
from fieldkit.pki import PkiError
from fieldkit.runner import ServiceContext
from fieldkit.sync.courier import Courier
from fieldkit.sync.messages import (
    NOT_ENROLLED_JA,
    Accepted,
    OperatorsRequest,
    OutboxStatus,
    StatusRequest,
    SubmitPacket,
    SubmitRecord,
)
from fieldkit.sync.reports import ReportForwarder
from fieldkit.sync.wire import OperatorRoster

log = logging.getLogger(__name__)

# (kind, sender) of the records offered again under the sender's own ID until sync takes them.
OWN_IDS = frozenset({("erasure", "wipe"), ("audit", "kiosk")})


def setup(ctx: ServiceContext) -> None:
    config: DeviceConfig = ctx.config

    def announce(status: OutboxStatus) -> None:
        # Called from a request handler too: publishing waits for the broker's PUBACK, which
        # the bus thread would deliver, so publish from a thread of its own.
        def publish() -> None:
            try:
                ctx.bus.publish("sync/evt/outbox", status)
            except Exception:
                log.exception("could not announce the outbox state")

        threading.Thread(target=publish, name="sync-announce", daemon=True).start()

    try:
        courier = Courier(config.device.id, config.sync, on_change=announce)
    except (OSError, PkiError) as exc:
        # Stay up and say why on every request, instead of a restart loop nobody reads.
        reason = (
            f"this tablet is not enrolled or its bundle is unreadable ({exc.__class__.__name__}"
        )
        reason += f" at {config.sync.bundle}) / {NOT_ENROLLED_JA}"
        log.error("sync cannot start its outbox: %s", reason)

        def refuse(request: Message, meta: Incoming) -> Message:
            raise MessageError(reason)

        for op, model in (
            ("submit-packet", SubmitPacket),
            ("submit", SubmitRecord),
            ("status", StatusRequest),
            ("operators", OperatorsRequest),
        ):
            ctx.bus.handle_request(op, model, refuse)
        return

    def on_packet(request: SubmitPacket, meta: Incoming) -> Accepted:
        record_id = courier.submit_packet(request)
        return Accepted(record_id=record_id, waiting=courier.outbox.state().pending)

    def on_record(request: SubmitRecord, meta: Incoming) -> Accepted:
        if request.record_id is not None and (request.kind, meta.sender) not in OWN_IDS:
            # Only the wipe (erasure records) and the kiosk (its audit trail's events) offer
            # records again under their own IDs; anyone else choosing an ID could take a place
            # meant for one of theirs.
            raise MessageError(
                "record_id: only the wipe's erasure records and the kiosk's audit events "
                "carry their own ID",
                ["record_id"],
            )
        record_id = courier.submit_record(request.kind, request.body, request.record_id)
        return Accepted(record_id=record_id, waiting=courier.outbox.state().pending)

    def on_status(request: StatusRequest, meta: Incoming) -> OutboxStatus:
        return courier.status()

    def on_operators(request: OperatorsRequest, meta: Incoming) -> OperatorRoster:
        return courier.roster

    def on_roster(roster: OperatorRoster) -> None:
        # Off the hub link's thread: publishing waits for the local broker.
        def publish() -> None:
            try:
                ctx.bus.publish("sync/evt/operators", roster)
                # Evidence on the hub of which tablet applied which roster (R13, R22).
                courier.submit_record(
                    "audit",
                    {
                        "at": time.time(),
                        "actor": "sync",
                        "action": "operators-applied",
                        "detail": {"version": roster.version, "operators": len(roster.operators)},
                    },
                )
            except Exception:
                log.exception("could not pass on the operator roster")

        threading.Thread(target=publish, name="sync-roster", daemon=True).start()

    courier.on_roster = on_roster

    def on_antivirus_health(health: AntivirusHealth, meta: Incoming) -> None:
        # What the hub's device page shows: definitions age, the gate, open findings (R10).
        courier.submit_record("health", antivirus_health_body(health))

    def on_antivirus_finding(finding: Finding, meta: Incoming) -> None:
        courier.submit_record(
            "audit",
            {
                "at": finding.detected_at,
                "actor": "antivirus",
                "action": "av-finding",
                "outcome": "finding",
                "detail": {"signature": finding.signature, "path": finding.path},
            },
        )

    ctx.bus.handle_request("submit-packet", SubmitPacket, on_packet)
    ctx.bus.handle_request("submit", SubmitRecord, on_record)
    ctx.bus.handle_event("antivirus/evt/health", AntivirusHealth, on_antivirus_health)
    ctx.bus.handle_event("antivirus/evt/finding", Finding, on_antivirus_finding)
    ctx.bus.handle_request("status", StatusRequest, on_status)
    ctx.bus.handle_request("operators", OperatorsRequest, on_operators)
    courier.start()
    ctx.on_stop(courier.stop)
    if config.sync.reports is not None:
        # The kernel audit summary and the file-integrity result, written by root's units.
        forwarder = ReportForwarder(
            courier,
            config.sync.reports,
            config.sync.outbox.with_name("reports-sent.json"),
            config.sync.reports_poll,
        )
        forwarder.start()
        ctx.on_stop(forwarder.stop)
        ctx.reports = forwarder  # type: ignore[attr-defined]
    ctx.courier = courier  # type: ignore[attr-defined]


def antivirus_health_body(health: AntivirusHealth) -> dict[str, object]:
    """A device-health record from the antivirus service's own report."""
    antivirus: dict[str, object] = {
        "gate_allowed": health.gate.allowed,
        "gate_reason": health.gate.reason,
        "findings": len(health.last_scan.findings) if health.last_scan else 0,
    }
    if health.gate.definitions_age_hours is not None:
        antivirus["definitions_age_hours"] = round(health.gate.definitions_age_hours, 2)
    if health.last_update is not None:
        antivirus["last_update_ok"] = health.last_update.ok
    return {"at": health.gate.checked_at, "antivirus": antivirus}
