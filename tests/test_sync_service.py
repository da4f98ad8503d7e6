"""The ``sync`` service on the tablet bus: sealing, outbox bound, what its disk holds.
R15 R21 R23 R24"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.audit import AuditLog, entries
from fieldkit.broker import LocalBroker
from fieldkit.bus import RequestRefused
from fieldkit.config import DeviceConfig
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import ErasureRow, RefusalRow, SealedPacketRow
from fieldkit.kiosk.flow import AuditEvent
from fieldkit.kiosk.outbound import HandedCursor, Outbound, audit_body, trail_record_id
from fieldkit.pki import KitPki
from fieldkit.registry import ServiceSpec, load_specs
from fieldkit.runner import ServiceContext, start_service, stop_service
from fieldkit.sealing import SealedPacket, SealingError, open_packet
from fieldkit.sealing_keys import find_private_sealing_keys, generate
from fieldkit.sync.courier import Courier
from fieldkit.sync.messages import (
    Accepted,
    ApplicationPacket,
    OutboxStatus,
    StatusRequest,
    SubmitPacket,
    SubmitRecord,
)
from fieldkit.wipe.record import ErasureRecord, follow_chain
from fieldkit.wipe.service import EVIDENCE_FILE, Wiper, install
from tests.conftest import BusFactory
from tests.hubkit import (
    MUNICIPALITY,
    IngestFactory,
    count_records,
    signing_public_b64,
    statistics_body,
    tablet_dir,
    wait_for,
)
from tests.support.municipality import MUNICIPALITY_MACHINES
from tests.support.sync import tablet_config
from tests.wipe_fixtures import make_device

# Planted personal data: a 23-digit application id and recognisable "photo" bytes.
APPLICATION_ID = "12345678901234567890123"
PHOTO = b"\xff\xd8\xff\xe0FIELDKIT-PLANTED-PHOTO-" + bytes(range(256)) * 8 + b"\xff\xd9"


def packet_request(application_id: str = APPLICATION_ID) -> SubmitPacket:
    return SubmitPacket(
        municipality=MUNICIPALITY,
        packet=ApplicationPacket(
            application_id=application_id,
            photo_jpeg=base64.b64encode(PHOTO).decode(),
            electronic_certificate=True,
            braille=False,
            mode="support",
            created_at=time.time(),
        ),
    )


@pytest.fixture
def sync_service(
    broker: LocalBroker, tmp_path: Path, pki: KitPki, hub_broker: HubBroker
) -> Iterator[ServiceContext]:
    (spec,) = load_specs(["sync"])
    ctx = start_service(spec, tablet_config(tmp_path, pki, hub_broker.port))
    yield ctx
    stop_service(ctx)


def courier_of(ctx: ServiceContext) -> Courier:
    courier: Courier = ctx.courier  # type: ignore[attr-defined]
    return courier


def test_packet_is_sealed_stored_as_ciphertext_and_opened_only_by_the_receiver(
    sync_service: ServiceContext,
    make_bus: BusFactory,
    make_ingest: IngestFactory,
    database_url: str,
    pki: KitPki,
    tmp_path: Path,
) -> None:
    ingest = make_ingest(database_url)
    tester = make_bus("tester")
    accepted = tester.request("sync", "submit-packet", packet_request(), Accepted)
    wait_for(lambda: count_records(ingest) == 1, what="packet at the hub")
    with Session(ingest.engine) as session:
        row = session.scalars(select(SealedPacketRow)).one()
    assert row.record_id == accepted.record_id and row.municipality == MUNICIPALITY
    assert APPLICATION_ID.encode() not in row.ciphertext and PHOTO[:40] not in row.ciphertext

    # The hub exports the municipality's packets (ciphertext); the municipality opens them
    # offline, with the device signature checked (`fieldkit packet open`).
    hub_config = tmp_path / "hub.toml"
    hub_config.write_text(
        f'[device]\nid = "hub-01"\nrole = "hub"\n[hub]\ndatabase_url = "{database_url}"\n'
    )
    exported = tmp_path / "export"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fieldkit",
            "--config",
            str(hub_config),
            "hub",
            "export-packets",
            MUNICIPALITY,
            "--out",
            str(exported),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    sealed_file = exported / f"{row.record_id}.json"
    packet = SealedPacket.model_validate_json(sealed_file.read_bytes())
    assert APPLICATION_ID.encode() not in sealed_file.read_bytes()
    opened = subprocess.run(
        [
            sys.executable,
            "-m",
            "fieldkit",
            "packet",
            "open",
            str(sealed_file),
            "--key",
            str(MUNICIPALITY_MACHINES.key(MUNICIPALITY).private),
            "--passphrase-file",
            str(MUNICIPALITY_MACHINES.passphrase_file()),
            "--roster",
            str(pki.roster),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert b"signature verified" in opened.stderr
    content = ApplicationPacket.model_validate_json(opened.stdout)
    assert content.application_id == APPLICATION_ID
    assert base64.b64decode(content.photo_jpeg) == PHOTO

    # The tablet cannot: its bundle holds no receiver private key, and any other key fails.
    assert not find_private_sealing_keys([tablet_dir(pki, "tab-a")], max_bytes=None)
    with pytest.raises(SealingError):
        open_packet(packet, x25519.X25519PrivateKey.generate(), None)
    # A packet altered after sealing fails its signature.
    tampered = packet.model_copy(update={"municipality": "011002"})
    with pytest.raises(SealingError, match="signature"):
        open_packet(
            tampered,
            MUNICIPALITY_MACHINES.private(MUNICIPALITY),
            _device_key(pki),
        )


def _device_key(pki: KitPki) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from fieldkit.pki import read_roster

    raw = read_roster(pki.roster)["tab-a"].signing_public
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def test_invalid_submissions_are_refused_with_the_field_and_sync_keeps_serving(
    sync_service: ServiceContext, make_bus: BusFactory
) -> None:
    tester = make_bus("tester")
    with pytest.raises(RequestRefused) as refused:
        tester.request(
            "sync",
            "submit",
            SubmitRecord(kind="statistics", body={**statistics_body(), "sex": "x"}),
            Accepted,
        )
    assert refused.value.reply.fields == ["body.sex"]
    with pytest.raises(RequestRefused) as unknown:
        tester.request(
            "sync",
            "submit-packet",
            packet_request().model_copy(update={"municipality": "999999"}),
            Accepted,
        )
    assert "no receiver key for municipality 999999" in unknown.value.reply.reason
    assert APPLICATION_ID not in unknown.value.reply.reason
    ok = tester.request(
        "sync",
        "submit",
        SubmitRecord(
            kind="audit", body={"at": time.time(), "actor": "operator-7", "action": "login"}
        ),
        Accepted,
    )
    assert len(ok.record_id) == 32


def test_outbox_full_pushes_back_visibly_and_recovers(
    broker: LocalBroker,
    make_bus: BusFactory,
    tmp_path: Path,
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    sqlite_url: str,
) -> None:
    (spec,) = load_specs(["sync"])
    ctx = start_service(spec, tablet_config(tmp_path, pki, hub_broker.port, max_records=5))
    try:
        tester = make_bus("tester")
        events: list[OutboxStatus] = []
        watcher = make_bus("audit", connect=False)  # the read-only identity hears events
        watcher.observe(
            "sync/evt/outbox", lambda t, p, r: events.append(OutboxStatus.model_validate_json(p))
        )
        watcher.connect()
        # The hub ingest is not running yet: nothing is acknowledged, so the outbox fills.
        accepted = [
            tester.request(
                "sync", "submit", SubmitRecord(kind="statistics", body=statistics_body(i)), Accepted
            )
            for i in range(5)
        ]
        with pytest.raises(RequestRefused) as full:
            tester.request(
                "sync", "submit", SubmitRecord(kind="statistics", body=statistics_body()), Accepted
            )
        assert "outbox full" in full.value.reply.reason
        status = tester.request("sync", "status", StatusRequest(), OutboxStatus)
        assert status.full and status.text_ja.startswith("送信待ち")
        wait_for(lambda: events and events[-1].full, what="outbox-full event")
        ingest = make_ingest(sqlite_url)  # the hub comes back
        wait_for(lambda: count_records(ingest) == 5, what="the five at the hub")
        wait_for(lambda: events and not events[-1].full, what="accepting again")
        again = tester.request(
            "sync", "submit", SubmitRecord(kind="statistics", body=statistics_body()), Accepted
        )
        assert again.record_id not in {a.record_id for a in accepted}
    finally:
        stop_service(ctx)


def outbox_residue(outbox: Path) -> dict[str, list[str]]:
    """Which outbox files (database, WAL, shared memory) hold the planted data, raw."""
    needles = {
        "application id": APPLICATION_ID.encode(),
        "photo bytes": PHOTO[:64],
        "photo base64": base64.b64encode(PHOTO)[:64],
    }
    found: dict[str, list[str]] = {}
    for path in sorted(outbox.parent.glob(outbox.name + "*")):
        data = path.read_bytes()
        hits = [name for name, needle in needles.items() if needle in data]
        if hits:
            found[path.name] = hits
    return found


class UnsealedCourier(Courier):
    """The protection switched off: packets are stored as submitted, not sealed."""

    def submit_packet(self, request: SubmitPacket) -> str:
        return self.submit_record(
            "audit",
            {
                "at": time.time(),
                "actor": "x",
                "action": "packet",
                "detail": {"packet": request.packet.model_dump_json()},
            },
        )


@pytest.mark.parametrize("sealing", ["on", "off"])
def test_outbox_file_holds_no_readable_personal_data(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path, sealing: str
) -> None:
    """Search the raw outbox files, WAL included, for a planted application id and photo."""
    from tests.hubkit import sync_settings

    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    courier_class = Courier if sealing == "on" else UnsealedCourier
    courier = courier_class("tab-a", settings)  # not started: records stay in the outbox
    try:
        for _ in range(3):
            courier.submit_packet(packet_request())
        files = {p.name for p in tmp_path.glob("outbox.sqlite*")}
        assert "outbox.sqlite-wal" in files  # the WAL is really there and searched
        residue = outbox_residue(settings.outbox)
    finally:
        courier.outbox.close()
    if sealing == "on":
        assert residue == {}
    else:
        assert residue  # the search does find plaintext when it is there
    assert json.dumps(residue)  # (names only, never the data)


def test_packet_open_with_the_wrong_key_fails_clearly(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path
) -> None:
    """`fieldkit packet open` says why it cannot open, and prints nothing of the content."""
    from tests.hubkit import sync_settings

    courier = Courier("tab-a", sync_settings(pki, hub_broker, "tab-a", tmp_path / "o.sqlite"))
    try:
        body = courier.sealer.seal_packet(packet_request(), "ab" * 16)
    finally:
        courier.outbox.close()
    sealed = tmp_path / "packet.json"
    sealed.write_text(json.dumps(body))
    wrong_key = generate(tmp_path / "another-key", b"another passphrase").private
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("another passphrase\n")
    run = subprocess.run(
        [
            *(sys.executable, "-m", "fieldkit", "packet", "open", str(sealed)),
            *("--key", str(wrong_key), "--passphrase-file", str(passphrase)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "sealed to another receiver key" in run.stderr
    assert APPLICATION_ID not in run.stdout + run.stderr


def test_antivirus_health_and_findings_reach_the_hub(
    sync_service: ServiceContext,
    make_bus: BusFactory,
    make_ingest: IngestFactory,
    database_url: str,
) -> None:  # R10: a scan finding is reported to the hub (and shown on its device page)
    from fieldkit.antivirus.messages import (
        AntivirusHealth,
        Finding,
        FindingItem,
        GateReply,
        ScanReport,
    )
    from fieldkit.hub.db import AuditRow, HealthRow

    ingest = make_ingest(database_url)
    now = time.time()
    scan = ScanReport(
        device_id="tab-a", run_id="r1", completed=True, scanned=["/tmp"], skipped=[],
        findings=[FindingItem(path="/tmp/sample.bin", signature="Fieldkit.Test.Marker")],
        errors=[], definitions_built_at=now - 3600, started_at=now - 5, finished_at=now,
    )  # fmt: skip
    gate = GateReply(
        allowed=False, reason="threat-found", message_ja="検出", message_en="found",
        definitions_built_at=now - 3600, definitions_age_hours=1.0, max_age_hours=48,
        checked_at=now,
    )  # fmt: skip
    antivirus = make_bus("antivirus")
    antivirus.publish(
        "antivirus/evt/health",
        AntivirusHealth(
            device_id="tab-a", gate=gate, databases=[], last_update=None, last_scan=scan
        ),
    )
    antivirus.publish(
        "antivirus/evt/finding",
        Finding(
            device_id="tab-a", run_id="r1", path="/tmp/sample.bin",
            signature="Fieldkit.Test.Marker", detected_at=now,
        ),
    )  # fmt: skip

    def at_hub() -> tuple[HealthRow | None, AuditRow | None]:
        with Session(ingest.engine) as session:
            health = session.scalars(select(HealthRow)).first()
            audit = session.scalars(select(AuditRow).where(AuditRow.action == "av-finding")).first()
            return health, audit

    wait_for(lambda: all(at_hub()), what="antivirus health and finding at the hub")
    health, audit = at_hub()
    assert health is not None and audit is not None
    assert health.report["antivirus"]["findings"] == 1
    assert health.report["antivirus"]["gate_allowed"] is False
    assert audit.detail["signature"] == "Fieldkit.Test.Marker"


def erasure_rows(ingest: Any) -> list[ErasureRecord]:
    with Session(ingest.engine) as session:
        return [ErasureRecord.model_validate(r) for r in session.scalars(select(ErasureRow.record))]


def test_erasure_records_reach_the_hub_in_order_once_even_when_sync_was_down(
    broker: LocalBroker,
    kit_config: DeviceConfig,
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    make_bus: BusFactory,
    database_url: str,
    tmp_path: Path,
) -> None:
    """R21 R24: the wipe hands its records to sync's outbox by request, oldest first. Records
    made while sync was down, or without a bus (`fieldkit wipe scan`), follow once sync is up;
    a record offered twice is kept once; the hub can follow the whole chain."""
    ingest = make_ingest(database_url)
    device, _, _ = make_device(tmp_path / "device")
    wipe_settings = device.wipe.model_copy(
        update={"handover_retry": 0.3, "handover_timeout": 0.5, "boot_scan": False}
    )
    config = device.model_copy(
        update={"bus": kit_config.bus, "wipe": wipe_settings, "device": kit_config.device}
    )
    key = tablet_dir(pki, "tab-a") / "signing.key"
    offline = Wiper(config.wipe, "tab-a", key_path=key)  # as `fieldkit wipe scan` does
    offline.scan_catalogue()
    offline.close()

    made: list[Wiper] = []

    def setup(ctx: ServiceContext) -> None:
        made.append(install(ctx, Wiper(ctx.config.wipe, "tab-a", key_path=key)))

    wipe = start_service(ServiceSpec(name="wipe", summary="t", setup=setup), config)
    try:
        (wiper,) = made
        wiper.scan_catalogue()  # sync is not running: both wait
        time.sleep(1.0)
        assert len(wiper.store.not_handed_over()) == 2
        (spec,) = load_specs(["sync"])
        sync = start_service(spec, tablet_config(tmp_path, pki, hub_broker.port))
        try:
            wait_for(lambda: len(erasure_rows(ingest)) == 2, what="two erasure records at the hub")
            wiper.scan_catalogue()  # with sync up: straight through
            wait_for(lambda: len(erasure_rows(ingest)) == 3, what="the third record")
            outbox = courier_of(sync).outbox

            def delivered() -> bool:
                state = outbox.state()
                return state.pending == 0 and state.sent == 0

            wait_for(delivered, what="the outbox empty")
            # Offered again after delivery (an answer lost on the way back): the same bytes
            # again, which the hub takes as a duplicate, not as a replay.
            with sqlite3.connect(config.wipe.state_dir / EVIDENCE_FILE) as db:
                db.execute("DELETE FROM handed_over")
            wiper.sealed.set()
            wait_for(lambda: not wiper.store.not_handed_over(), what="offered again and taken")
            wait_for(delivered, what="the outbox empty again")
            assert outbox.state().refused == 0
            # Only the wipe may choose a record's ID.
            squatter = SubmitRecord(kind="erasure", body={}, record_id="f" * 32)
            with pytest.raises(RequestRefused, match="only the wipe"):
                make_bus("tester").request("sync", "submit", squatter, Accepted)
            head = wiper.store.last_hash()
        finally:
            stop_service(sync)
    finally:
        stop_service(wipe)
    at_hub = erasure_rows(ingest)
    assert count_records(ingest) == 3 and len(at_hub) == 3
    with Session(ingest.engine) as session:
        assert session.scalars(select(RefusalRow)).all() == []
    signer = base64.b64decode(signing_public_b64(pki, "tab-a")).hex()
    chain = follow_chain(at_hub, signer)
    assert chain.intact, chain.problems
    assert chain.records == 3 and chain.head == head


def test_a_dead_kiosks_audit_events_reach_sync_once_from_its_trail(
    sync_service: ServiceContext, make_bus: BusFactory, tmp_path: Path
) -> None:
    """The kiosk's queue to sync dies with its process; its trail does not. The next kiosk
    offers again what the trail holds past the cursor, under IDs the entries fix: each event
    reaches the outbox once, whether the cursor survived or not (R14, R24)."""
    trail = AuditLog(tmp_path / "kiosk-audit.jsonl")
    cursor = HandedCursor(tmp_path / "kiosk-audit.jsonl.handed")
    events = [
        AuditEvent(time.time() + n, "operator-7", "a" * 32, action, "home", "scan")
        for n, action in enumerate(["start", "closed", "wipe-failed"])
    ]
    written = [
        trail.append(
            {
                "at": e.at,
                "operator": e.operator,
                "session": e.sid,
                "action": e.action,
                "from": e.step_from,
                "to": e.step_to,
            }
        )
        for e in events
    ]

    def audit_rows() -> list[str]:
        with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
            rows = db.execute("SELECT record_id FROM record WHERE kind='audit' ORDER BY seq")
            return [rid for (rid,) in rows]

    # The first kiosk hands the first event over, then dies with the other two unrecorded.
    first = Outbound(make_bus("kiosk"), "site-1", cursor)
    first.audit(events[0], written[0])
    wait_for(lambda: cursor.read() == 1, what="the first event taken")
    first.close()
    # The next one finds two events past the cursor, and a kiosk without its cursor all three.
    second = Outbound(make_bus("kiosk"), "site-1", cursor)
    assert second.resume(entries(trail.path)) == 2
    wait_for(lambda: cursor.read() == 3, what="the trail caught up")
    second.close()
    cursor.path.unlink()
    third = Outbound(make_bus("kiosk"), "site-1", cursor)
    assert third.resume(entries(trail.path)) == 3
    wait_for(lambda: cursor.read() == 3, what="offered again and taken")
    third.close()
    assert audit_rows() == [trail_record_id(entry) for entry in written]
    # Nobody else may choose an audit record's ID.
    squatter = SubmitRecord(kind="audit", body=audit_body(events[0]), record_id="e" * 32)
    with pytest.raises(RequestRefused, match="the kiosk's audit events"):
        make_bus("tester").request("sync", "submit", squatter, Accepted)
