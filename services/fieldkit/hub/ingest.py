"""Hub ingest: takes records off the hub broker, checks them (``records``), stores each
exactly once, commits, and only then acknowledges to the device (R15, R16, R21, R24).

Records are taken in batches: one transaction (one fsync) for many records is what lets a
single ingest keep up with a burst; the acks for a batch go out after its commit.

Ingest also delivers the operator roster (R13, R22): it reads the handler registry every
``roster_poll`` seconds, pushes a changed roster to every enrolled device, and answers a
device's roster request (sent by sync on every connect) unless the device is up to date.
The hub broker keeps no retained messages, so these two paths are the whole delivery.

Every ack and roster goes out signed for its device with the hub's downlink key
(``hub.downlink``), which the tablet pinned at enrolment; it acts on nothing else.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fieldkit.hub.db import DeviceStatusRow, RecordRow, RefusalRow, make_engine, upgrade
from fieldkit.hub.downlink import DownlinkSigner
from fieldkit.hub.records import (
    Checked,
    Receivers,
    Refused,
    Roster,
    check_record,
    record_id_of,
    rows_for,
)
from fieldkit.hub.roster import tablet_roster
from fieldkit.hub.settings import HubSection
from fieldkit.messages import MessageError, decode
from fieldkit.pki import INGEST_IDENTITY, KitPki
from fieldkit.sync.link import HubLink, tls_context
from fieldkit.sync.wire import (
    Ack,
    Acks,
    DeviceStatus,
    OperatorRoster,
    RosterRequest,
    down_topic,
    roster_topic,
)

log = logging.getLogger(__name__)


class Ingest:
    """The ingest loop: one MQTT client on the hub broker, one database, batches."""

    def __init__(self, settings: HubSection, *, engine: Engine | None = None) -> None:
        self.settings = settings
        pki = KitPki(settings.pki)
        if settings.migrate_on_start and engine is None:
            upgrade(settings.database_url)
        self.engine = engine or make_engine(settings.database_url)
        self.roster = Roster(pki.roster)
        self.pki = pki
        self.receivers = Receivers(pki)
        self.signer = DownlinkSigner(pki)
        self._queue: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._roster_requests: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.operators: OperatorRoster | None = None
        self._operators_read = -float("inf")
        self._stop = threading.Event()
        self.stored = 0
        self.duplicates = 0
        self.refused = 0
        self.link = HubLink(
            "ingest",
            tls_context(pki.ca_cert, pki.hub_file("ingest.crt"), pki.hub_file("ingest.key")),
            settings.server_name,
            settings.broker_port,
            client_id=f"{INGEST_IDENTITY}.{threading.get_native_id()}",
            subscriptions=["fieldkit/+/up/record", "fieldkit/+/up/roster"],
            on_message=self._on_message,
            max_inflight=1000,
            reconnect_max=5,
        )
        self._thread = threading.Thread(target=self._loop, name="hub-ingest", daemon=True)

    def start(self) -> None:
        self.link.start()
        self._thread.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.link.wait_connected(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.link.stop()
        self.engine.dispose()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/up/roster"):
            self._roster_requests.put((topic, payload))
        else:
            self._queue.put((topic, payload))

    def _take_batch(self) -> list[tuple[str, bytes]]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait
        while len(batch) < self.settings.batch_max:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.serve_roster()
            except SQLAlchemyError as exc:
                log.error("operator roster not read: database unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("operator roster round failed")
            batch = self._take_batch()
            if not batch:
                continue
            try:
                acks = self.ingest(batch)
            except SQLAlchemyError as exc:
                # Nothing is acked, so the devices keep their records and send them again.
                log.error(
                    "database unavailable, %d records not acknowledged: %s",
                    len(batch),
                    type(exc).__name__,
                )
                time.sleep(1.0)
                continue
            except Exception:
                # A bug must not stop the ingest; the records were not acked and come again.
                log.exception("ingest of a batch of %d records failed", len(batch))
                time.sleep(1.0)
                continue
            for device_id, items in acks.items():
                signed = self.signer.sign(Acks(items=items, issued_at=time.time()), device_id)
                self.link.publish(down_topic(device_id), signed.encode())

    def serve_roster(self) -> None:
        """Push a changed roster to every enrolled device; answer devices that asked."""
        if time.monotonic() - self._operators_read >= self.settings.roster_poll:
            self._operators_read = time.monotonic()
            with Session(self.engine) as session:
                roster = tablet_roster(session, receivers=self.pki.receivers())
            # An empty registry (none made yet) leaves the tablets with their configured ones.
            if roster and (self.operators is None or self.operators.version != roster.version):
                self.operators = roster
                devices = self.roster.active()
                log.info(
                    "operator roster %s (%d operators, %d visits) to %d devices",
                    roster.version[:12],
                    len(roster.operators),
                    len(roster.visits),
                    len(devices),
                )
                for device_id in devices:
                    self._publish_roster(device_id, self.operators)
        while True:
            try:
                topic, payload = self._roster_requests.get_nowait()
            except queue.Empty:
                return
            device_id = topic.split("/")[1]
            found = self.roster.get(device_id)
            if found is None or found[0].revoked:
                log.warning("roster request from %s refused: not an enrolled device", device_id)
                continue
            try:
                request = decode(payload, RosterRequest)
            except MessageError as exc:
                log.warning("unreadable roster request from %s: %s", device_id, exc.reason)
                continue
            if request.status is not None:
                self.keep_status(device_id, request.status)
            if self.operators is not None and request.have != self.operators.version:
                self._publish_roster(device_id, self.operators)

    def keep_status(self, device_id: str, status: DeviceStatus) -> None:
        """The device's latest status, for the device page (the previous one is replaced)."""
        fields = {
            "reported_at": status.at,
            "received_at": time.time(),
            "version": status.version,
            "outbox_pending": status.outbox_pending,
            "outbox_refused": status.outbox_refused,
            "outbox_oldest_at": status.outbox_oldest_at,
        }
        with Session(self.engine) as session, session.begin():
            row = session.get(DeviceStatusRow, device_id)
            if row is None:
                session.add(DeviceStatusRow(device_id=device_id, **fields))
            else:
                for name, value in fields.items():
                    setattr(row, name, value)

    def _publish_roster(self, device_id: str, roster: OperatorRoster) -> None:
        self.link.publish(roster_topic(device_id), self.signer.sign(roster, device_id).encode())

    def ingest(self, batch: list[tuple[str, bytes]]) -> dict[str, list[Ack]]:
        """Check, store and commit a batch; return the acks to send, by device."""
        acks: dict[str, list[Ack]] = defaultdict(list)
        refusals: list[RefusalRow] = []
        good: dict[str, Checked] = {}
        now = time.time()
        for topic, payload in batch:
            sender = topic.split("/")[1] if topic.count("/") >= 1 else "?"
            try:
                if len(payload) > self.settings.max_record_bytes:
                    raise Refused("record is larger than the hub accepts")
                checked = check_record(topic, payload, self.roster, self.receivers)
            except Refused as exc:
                record_id = record_id_of(payload)
                log.warning("refused a record from %s (%s): %s", sender, record_id, exc.reason)
                refusals.append(
                    RefusalRow(
                        device_id=sender[:63], record_id=record_id, at=now, reason=exc.reason[:500]
                    )
                )
                if record_id is not None:
                    acks[sender].append(
                        Ack(record_id=record_id, outcome="refused", reason=exc.reason[:500])
                    )
                continue
            rid = checked.record.record_id
            if rid in good:
                if good[rid].digest != checked.digest:
                    self._refuse_replay(checked, refusals, acks, now)
                else:
                    acks[sender].append(Ack(record_id=rid, outcome="duplicate"))
                continue
            good[rid] = checked
        with Session(self.engine) as session, session.begin():
            known: dict[str, str] = {}
            if good:
                query = select(RecordRow.record_id, RecordRow.digest).where(
                    RecordRow.record_id.in_(list(good))
                )
                known = {rid: digest for rid, digest in session.execute(query)}
            stored: list[Checked] = []
            tables: dict[type[Any], list[dict[str, Any]]] = defaultdict(list)
            for rid, checked in good.items():
                if rid in known:
                    if known[rid] == checked.digest:
                        self.duplicates += 1
                        log.info(
                            "duplicate of record %s from %s ignored", rid, checked.record.device_id
                        )
                        acks[checked.record.device_id].append(
                            Ack(record_id=rid, outcome="duplicate")
                        )
                    else:
                        self._refuse_replay(checked, refusals, acks, now)
                    continue
                for table, row in rows_for(checked, now).items():
                    tables[table].append(row)
                stored.append(checked)
            # Bulk inserts, ledger first (the kind tables reference it): one round trip each.
            order: list[type[Any]] = [RecordRow, *[t for t in tables if t is not RecordRow]]
            for model in order:
                if tables.get(model):
                    session.execute(insert(model), tables[model])
            session.add_all(refusals)
        # Committed: now, and only now, the devices may forget these records.
        for checked in stored:
            acks[checked.record.device_id].append(
                Ack(record_id=checked.record.record_id, outcome="stored")
            )
        self.stored += len(stored)
        self.refused += len(refusals)
        return acks

    def _refuse_replay(
        self,
        checked: Checked,
        refusals: list[RefusalRow],
        acks: dict[str, list[Ack]],
        now: float,
    ) -> None:
        rid, dev = checked.record.record_id, checked.record.device_id
        reason = "record id already used for a different record (replay refused)"
        log.warning("refused a record from %s (%s): %s", dev, rid, reason)
        refusals.append(RefusalRow(device_id=dev, record_id=rid, at=now, reason=reason))
        acks[dev].append(Ack(record_id=rid, outcome="refused", reason=reason))
