"""The wipe service on a real broker: the forget handshake, purge, residue scan, signed record.

R6 (erased automatically at the end), R12 (cannot be restored), R30 (verified erasure),
R31 (the compliance evidence).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldkit.bus import Bus, BusError, RequestRefused
from fieldkit.cli import main
from fieldkit.config import DeviceConfig
from fieldkit.erasure import serve_forget_requests
from fieldkit.messages import MessageError, decode
from fieldkit.registry import holders, load_specs
from fieldkit.runner import ServiceContext, start_service, stop_service
from fieldkit.sync.messages import Accepted, SubmitRecord
from fieldkit.wipe.messages import MarkersAccepted, SessionMarkers, WipeResult, WipeSession
from fieldkit.wipe.record import (
    ErasureRecord,
    EvidenceStore,
    follow_chain,
    public_hex,
    verify_chain,
)
from fieldkit.wipe.service import EVIDENCE_FILE, RECORD_TOPIC, Wiper
from tests.conftest import BusFactory
from tests.wipe_fixtures import APPLICATION_ID, SID, make_device, plant_everywhere, start_wipe

CANARY = "canary-" + "c0ffee" * 4


@pytest.fixture
def device(tmp_path: Path) -> tuple[DeviceConfig, Path]:
    config, root, _ = make_device(tmp_path)
    return config, root


@pytest.fixture
def kit_device(
    broker: object, kit_config: DeviceConfig, device: tuple[DeviceConfig, Path]
) -> Iterator[tuple[ServiceContext, Wiper, Path]]:
    config, root = device
    # The broker fixture's runtime dir is kit_config's; point this device's bus at it.
    config = config.model_copy(update={"bus": kit_config.bus})
    ctx, wiper = start_wipe(config, ["capture", "kiosk"])
    yield ctx, wiper, root
    stop_service(ctx)


def holder(make_bus: BusFactory, name: str, forget: Callable[[str], list[str]]) -> Bus:
    bus = make_bus(name, connect=False)
    serve_forget_requests(bus, forget)
    bus.connect()
    return bus


class Records:
    def __init__(self, make_bus: BusFactory) -> None:
        self.items: list[ErasureRecord] = []
        self.arrived = threading.Condition()
        make_bus("audit").observe(RECORD_TOPIC, self)

    def __call__(self, topic: str, payload: bytes, retained: bool) -> None:
        with self.arrived:
            assert not retained
            self.items.append(decode(payload, ErasureRecord))
            self.arrived.notify_all()

    def wait(self, count: int = 1) -> list[ErasureRecord]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.items) >= count, 10)
            return list(self.items)


def markers() -> SessionMarkers:
    return SessionMarkers(sid=SID, application_id=APPLICATION_ID, canary=CANARY)


def request_wipe(kiosk: Bus, with_markers: bool = True) -> WipeResult:
    request = WipeSession(sid=SID, operator="op-01", markers=markers() if with_markers else None)
    return kiosk.request("wipe", "wipe-session", request, WipeResult, timeout=30)


def plant_erasable(root: Path) -> None:
    planted = plant_everywhere(root, SID, APPLICATION_ID.encode())
    for name in ("cups-cache", "journald", "temp", "broker-persistence", "outbox"):
        planted[name].unlink()  # places the session must never reach: left clean here


def test_registered_holders_are_the_services_that_hold_applicant_data() -> None:
    specs = load_specs()
    assert holders(specs) == ["capture", "card", "kiosk", "printing"]
    (kiosk,) = [s for s in specs if s.name == "kiosk"]
    assert "wipe" in kiosk.requests


def test_a_session_wipe_with_every_holder_answering_leaves_nothing(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    """R6/R12: the handshake completes, every residue is purged, the record says ok."""
    ctx, _wiper, root = kit_device
    plant_erasable(root)
    (root / "browser-cache" / "canary.txt").write_text(f"<input value='{CANARY}'>")
    records = Records(make_bus)
    forgotten: list[str] = []
    holder(make_bus, "capture", lambda sid: forgotten.append(sid) or ["photo buffers"])
    kiosk = holder(make_bus, "kiosk", lambda sid: ["applicant session"])

    result = request_wipe(kiosk)

    assert result.ok, result.failures
    assert forgotten == [SID]
    assert not (root / "run-session" / SID).exists()
    assert not (root / "browser-cache" / "canary.txt").exists()
    assert not any((root / "profile").iterdir())
    assert not (root / "spool-cups" / "d00042-001").exists()
    (record,) = records.wait()
    assert record.record_id == result.record_id and record.hash == result.record_hash
    assert record.sid == SID and record.operator == "op-01" and record.device == "test-tablet-01"
    assert [(h.service, h.answered, h.ok) for h in record.holders] == [
        ("capture", True, True),
        ("kiosk", True, True),
    ]
    by_name = {loc.name: loc for loc in record.locations}
    assert by_name["browser-profile"].erased >= 2
    assert all(loc.status in ("clean", "absent") for loc in record.locations), by_name
    # Evidence only: the record carries no marker value.
    assert APPLICATION_ID not in record.model_dump_json() and CANARY not in record.model_dump_json()
    store = EvidenceStore(ctx.config.wipe.state_dir / EVIDENCE_FILE)
    assert verify_chain(store.records(), record.signer) == []
    store.close()


def test_a_holder_that_does_not_answer_fails_the_record_visibly(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    records = Records(make_bus)
    kiosk = holder(make_bus, "kiosk", lambda sid: ["applicant session"])
    # capture is expected but silent
    result = request_wipe(kiosk)
    assert not result.ok
    assert result.failures == ["holder capture did not answer"]
    (record,) = records.wait()
    assert not record.ok and [h.answered for h in record.holders] == [False, True]


def test_a_holder_that_cannot_forget_fails_the_record(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    def broken(sid: str) -> list[str]:
        raise RuntimeError("buffer locked")

    holder(make_bus, "capture", broken)
    kiosk = holder(make_bus, "kiosk", lambda sid: [])
    result = request_wipe(kiosk)
    assert not result.ok and result.failures == ["holder capture could not forget (RuntimeError)"]


def test_a_holder_that_leaves_a_copy_behind_is_caught_by_the_scan(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    """A holder answers 'forgotten' but its data went to the journal: the record fails there."""
    _, _, root = kit_device

    def leaky(sid: str) -> list[str]:
        (root / "journal" / "user-1000.journal").write_bytes(
            b"MESSAGE=id " + APPLICATION_ID.encode()
        )
        return ["photo buffers"]

    holder(make_bus, "capture", leaky)
    kiosk = holder(make_bus, "kiosk", lambda sid: [])
    result = request_wipe(kiosk)
    assert not result.ok
    assert result.failures == ["journald: residue (1 found)"]


def test_markers_registered_during_the_session_are_used_and_then_dropped(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    _, wiper, root = kit_device
    holder(make_bus, "capture", lambda sid: [])
    kiosk = holder(make_bus, "kiosk", lambda sid: [])
    accepted = kiosk.request("wipe", "session-markers", markers(), MarkersAccepted)
    assert accepted.sid == SID
    leftover = root / "tmp" / "leftover.html"
    leftover.write_text(f"<p>{APPLICATION_ID}</p>")
    result = request_wipe(kiosk, with_markers=False)
    # Found by the registered ID; a temporary folder is not the kit's alone, so the file is a
    # finding that fails the record, not something the wipe deletes.
    assert not result.ok and result.failures == ["temp: residue (1 found)"]
    assert leftover.read_text() == f"<p>{APPLICATION_ID}</p>"
    # The record failed: the wipe keeps the markers for the retry, until one passes.
    assert set(wiper._markers) == {SID}
    leftover.unlink()
    assert request_wipe(kiosk, with_markers=False).ok
    assert wiper._markers == {}


def test_bad_wipe_requests_are_refused_naming_the_field(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    kiosk = make_bus("kiosk")
    with pytest.raises(RequestRefused) as refused:
        kiosk.request(
            "wipe",
            "wipe-session",
            WipeSession.model_construct(sid="nope", operator="op"),
            WipeResult,
        )
    assert refused.value.reply.fields == ["sid"]
    # The service is still up and answers the next request.
    holder(make_bus, "capture", lambda sid: [])
    assert request_wipe(holder(make_bus, "kiosk", lambda sid: [])).ok


def test_only_services_allowed_to_ask_can_request_a_wipe(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    """capture has no right to send requests to wipe: the broker refuses the publish."""
    capture = make_bus("capture")
    with pytest.raises(BusError, match="refused"):
        capture.request("wipe", "wipe-session", WipeSession(sid=SID, operator="x"), WipeResult, 2)


def test_the_chain_detects_a_record_edited_or_removed(tmp_path: Path) -> None:
    """Evidence both ways: intact chain verifies; editing or deleting a record breaks it."""
    config, _root, _ = make_device(tmp_path)
    wiper = Wiper(config.wipe, "dev-1")
    for _ in range(3):
        wiper.scan_catalogue()
    wiper.close()
    path = config.wipe.state_dir / EVIDENCE_FILE
    store = EvidenceStore(path)
    records = store.records()
    assert len(records) == 3 and verify_chain(records) == []
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("DELETE FROM records WHERE seq = 2")
    store.close()
    # Someone with the file drops the triggers and edits a record: the chain says so.
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER records_no_update")
        body = db.execute("SELECT body FROM records WHERE seq = 2").fetchone()[0]
        db.execute(
            "UPDATE records SET body = ? WHERE seq = 2", (body.replace('"ok":true', '"ok":false'),)
        )
    problems = verify_chain(EvidenceStore(path).records())
    assert [(p.seq, p.problem) for p in problems] == [(2, "content does not match its hash")]
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER records_no_delete")
        db.execute("DELETE FROM records WHERE seq = 2")
    problems = verify_chain(EvidenceStore(path).records())
    assert [(p.seq, p.problem) for p in problems] == [(3, "does not follow the record before")]


def test_the_chain_is_followed_through_records_in_any_order(tmp_path: Path) -> None:
    """The hub's view: records arrive in any order; the chain is followed by its links, and a
    record that never arrived, a fork or an edit shows as a problem."""
    config, _root, _ = make_device(tmp_path)
    wiper = Wiper(config.wipe, "dev-1")
    for _ in range(4):
        wiper.scan_catalogue()
    records = [record for _, record in wiper.store.records()]
    wiper.close()
    chain = follow_chain(reversed(records))
    assert chain.intact and chain.records == 4 and chain.head == records[-1].hash
    gap = follow_chain([records[0], records[2], records[3]])
    assert (gap.records, gap.head) == (1, records[0].hash)
    assert gap.problems == [
        "2 of 3 records are not reached from the first one "
        "(a record before them is missing, or they fork)"
    ]
    fork = records[1].model_copy(update={"record_id": "f" * 32})
    fork = fork.model_copy(update={"hash": fork.compute_hash()})  # another record, same place
    assert "claim to follow" in follow_chain([*records, fork]).problems[0]
    edited = records[2].model_copy(update={"ok": False})
    problems = follow_chain([records[0], records[1], edited, records[3]]).problems
    assert problems == [f"record {edited.record_id}: content does not match its hash"]
    assert follow_chain([]).intact and follow_chain([]).records == 0
    twice = follow_chain([*records, records[1]])  # the same record received twice
    assert twice.intact and twice.records == 4


def test_a_chain_that_changes_key_is_intact_for_a_reader_who_trusts_both(tmp_path: Path) -> None:
    """Enrolment (or re-enrolment) changes the key records are signed with; the links hold,
    and each record is checked against the keys the reader trusts."""
    store = EvidenceStore(tmp_path / "evidence.sqlite")
    before, after = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    records = [
        store.append(ErasureRecord(kind="daily", device="d", started=1, finished=2, ok=True), k)
        for k in (before, before, after)
    ]
    store.close()
    both = {public_hex(before), public_hex(after)}
    assert follow_chain(records, both).intact
    only_new = follow_chain(records, public_hex(after)).problems
    assert len(only_new) == 2 and all("signed by another key" in p for p in only_new)


def test_a_store_from_before_the_hand_over_does_not_send_its_records_again(
    tmp_path: Path,
) -> None:
    """Records of an older store went out as events; they are not offered a second time (the
    hub would hold each twice under two IDs). New records are."""
    config, _root, _ = make_device(tmp_path)
    wiper = Wiper(config.wipe, "dev-1")
    wiper.scan_catalogue()
    wiper.scan_catalogue()
    wiper.close()
    path = config.wipe.state_dir / EVIDENCE_FILE
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE handed_over")  # as the store was before
    wiper = Wiper(config.wipe, "dev-1")
    try:
        assert wiper.store.not_handed_over() == []
        new = wiper.scan_catalogue()
        assert [r.record_id for _, r in wiper.store.not_handed_over()] == [new.record_id]
    finally:
        wiper.close()


def test_a_record_sync_refuses_for_what_it_holds_does_not_hold_back_the_rest(
    kit_device: tuple[ServiceContext, Wiper, Path], make_bus: BusFactory
) -> None:
    """Sync's contract: an error reply naming fields is a refusal for good, one naming none
    (outbox full) is for the moment. The first must not block every later record; the second
    must keep them all waiting, in order. (Here sync's side of the contract is played on the
    real broker; the real sync's idempotent submit is in test_sync_service.)"""
    _, wiper, _ = kit_device
    refuse_for_good: set[str] = set()
    full = threading.Event()
    full.set()
    taken: list[str] = []

    def submit(request: SubmitRecord, meta: object) -> Accepted:
        assert request.record_id is not None
        if full.is_set():
            raise MessageError("the outbox is full")
        if request.record_id in refuse_for_good:
            raise MessageError("invalid erasure record", ["body.level"])
        taken.append(request.record_id)
        return Accepted(record_id=request.record_id, waiting=len(taken))

    sync = make_bus("sync", connect=False)
    sync.handle_request("submit", SubmitRecord, submit)
    sync.connect()
    first = wiper.scan_catalogue()
    second = wiper.scan_catalogue()
    refuse_for_good.add(first.record_id)
    assert wiper.hand_over() == 2  # full: both wait, the first holds the second back
    assert taken == []
    full.clear()
    assert wiper.hand_over() == 0
    assert taken == [second.record_id]
    assert wiper.store.not_handed_over() == []


def test_a_record_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    config, _, _ = make_device(tmp_path)
    wiper = Wiper(config.wipe, "dev-1")
    wiper.scan_catalogue()
    records = wiper.store.records()
    wiper.close()
    assert verify_chain(records, records[0][1].signer) == []
    assert verify_chain(records, "00" * 32)[0].problem == "signed by another key"


def test_the_daily_scan_finds_any_applicants_data_and_photos(tmp_path: Path) -> None:
    config, root, _ = make_device(tmp_path)
    wiper = Wiper(config.wipe, "dev-1")
    clean = wiper.scan_catalogue()
    assert clean.ok, clean.failures
    (root / "var-tmp" / "x.bin").write_bytes(
        b"\x00" + "20111111111111111111111".encode("utf-16-le")
    )
    (root / "coredump" / "img").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64))
    dirty = wiper.scan_catalogue()
    wiper.close()
    assert not dirty.ok
    kinds = {f.kind for loc in dirty.locations for f in loc.findings}
    assert kinds == {"application-id-pattern-utf16", "jpeg"}
    assert {loc.name for loc in dirty.locations if loc.fails} == {"temp", "core-dumps"}


def test_the_boot_scan_publishes_a_daily_record(
    broker: object,
    kit_config: DeviceConfig,
    device: tuple[DeviceConfig, Path],
    make_bus: BusFactory,
) -> None:
    config, root = device
    (root / "outbox" / "plain.json").write_text('{"application_id": "20123123123123123123123"}')
    settings = config.wipe.model_copy(update={"boot_scan": True})
    records = Records(make_bus)
    ctx, _ = start_wipe(config.model_copy(update={"wipe": settings, "bus": kit_config.bus}), [])
    try:
        (record,) = records.wait()
    finally:
        stop_service(ctx)
    assert record.kind == "daily" and not record.ok
    assert record.failures == ["outbox: residue (1 found)"]


def test_the_cli_scans_and_verifies_the_chain(
    device: tuple[DeviceConfig, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, root = device
    path = ["--config", str(root.parent / "device.toml")]
    assert main([*path, "wipe", "scan", "--daily"]) == 0
    (root / "journal" / "system.journal").write_bytes(b"MESSAGE=" + APPLICATION_ID.encode())
    assert main([*path, "wipe", "scan", "--daily"]) == 1
    out = capsys.readouterr().out
    assert "FAIL journald" in out and APPLICATION_ID not in out
    assert main([*path, "wipe", "verify-chain"]) == 0
    assert "2 records, chain intact, 1 records say the erasure failed" in capsys.readouterr().out
    with sqlite3.connect(config.wipe.state_dir / EVIDENCE_FILE) as db:
        db.execute("DROP TRIGGER records_no_delete")
        db.execute("DELETE FROM records WHERE seq = 1")
    assert main([*path, "wipe", "verify-chain"]) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_the_registered_service_expects_the_registrys_holders(
    broker: object,
    kit_config: DeviceConfig,
    device: tuple[DeviceConfig, Path],
    make_bus: BusFactory,
) -> None:
    """The wiring used in production: holders come from the registry, not from the test."""
    config, _ = device
    (spec,) = load_specs(["wipe"])
    ctx = start_service(spec, config.model_copy(update={"bus": kit_config.bus}))
    try:
        kiosk = holder(make_bus, "kiosk", lambda sid: [])
        assert request_wipe(kiosk).failures == [
            "holder capture did not answer",
            "holder card did not answer",
            "holder printing did not answer",
        ]
        holder(make_bus, "capture", lambda sid: [])
        holder(make_bus, "card", lambda sid: [])
        holder(make_bus, "printing", lambda sid: [])
        assert request_wipe(kiosk).ok
    finally:
        stop_service(ctx)
