"""The courier: the outbox, the hub link and the delivery loop that empties the outbox into it
until the hub acknowledges its commit (R15, R16, R21, R23, R24). Usable without the bus."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fieldkit import __version__
from fieldkit.messages import MessageError, decode
from fieldkit.models import describe_validation_error, problem_keys
from fieldkit.municipalities import receiver_key_file
from fieldkit.pki import load_ed25519_private, load_x25519_public
from fieldkit.sealing import seal
from fieldkit.sync.downlink import DownlinkGuard
from fieldkit.sync.link import HubLink, tls_context
from fieldkit.sync.messages import FULL_TEXT_EN, FULL_TEXT_JA, OutboxStatus, SubmitPacket
from fieldkit.sync.outbox import DuplicateRecord, Outbox, OutboxFull
from fieldkit.sync.receivers import checked_keys, install_receivers
from fieldkit.sync.roster import load_roster, save_roster
from fieldkit.sync.settings import SyncSection
from fieldkit.sync.wire import (
    BODY_MODELS,
    Acks,
    DeviceStatus,
    DownlinkRefused,
    OperatorRoster,
    Record,
    RosterRequest,
    down_topic,
    roster_request_topic,
    roster_topic,
    up_topic,
)

log = logging.getLogger(__name__)


IDLE_CHECKPOINT_S = 2.0


def new_record_id() -> str:
    # Random, never derived from the applicant's data.
    return uuid.uuid4().hex


class Sealer:
    """Seals application packets to the municipality's public key from the bundle."""

    def __init__(self, bundle: Path, device_id: str) -> None:
        self.bundle = bundle
        self.device_id = device_id
        self.signing_key = load_ed25519_private(bundle / "signing.key")

    def seal_packet(self, request: SubmitPacket, record_id: str) -> dict[str, Any]:
        key_file = receiver_key_file(self.bundle, request.municipality)
        if not key_file.exists():
            raise MessageError(
                f"no receiver key for municipality {request.municipality}; enrol it on the hub",
                ["municipality"],
            )
        sealed = seal(
            request.packet.encode(),
            load_x25519_public(key_file),
            self.signing_key,
            record_id=record_id,
            device_id=self.device_id,
            municipality=request.municipality,
        )
        return sealed.model_dump()


class Courier:
    """Outbox + hub link + the delivery loop. Usable without the bus (bench, tests)."""

    def __init__(
        self,
        device_id: str,
        settings: SyncSection,
        *,
        sealer: Sealer | None = None,
        on_change: Callable[[OutboxStatus], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.settings = settings
        self.sealer = sealer or Sealer(settings.bundle, device_id)
        # Acks and rosters count only when signed by the hub key pinned at enrolment.
        self.downlink = DownlinkGuard(settings.bundle, device_id)
        self.outbox = Outbox(
            settings.outbox, max_records=settings.max_records, max_bytes=settings.max_bytes
        )
        self.on_change = on_change
        self.on_acked: Callable[[list[str]], None] | None = None
        self.on_roster: Callable[[OperatorRoster], None] | None = None
        self.roster = load_roster(settings.roster_path())
        self._roster_lock = threading.Lock()
        # Receiver keys of the kept roster not yet written into the bundle (an error writing).
        self._receivers_pending: dict[str, bytes] | None = None
        self._receivers_lock = threading.Lock()
        self._acks: queue.SimpleQueue[Acks] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Sent records awaiting their ack, with when we stop counting them against the window
        # (the outbox's own backoff decides when they are sent again).
        self._in_flight: dict[str, float] = {}
        self._was_full = self.outbox.full
        bundle = settings.bundle
        self.link = HubLink(
            "sync",
            tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key"),
            settings.hub_host,
            settings.hub_port,
            client_id=f"{device_id}.sync",
            subscriptions=[down_topic(device_id), roster_topic(device_id)],
            on_message=self._on_message,
            on_connect=self._on_connect,
            max_inflight=settings.window,
            reconnect_max=int(max(1, settings.reconnect_max)),
        )
        self._thread = threading.Thread(target=self._deliver_loop, name="sync-deliver", daemon=True)

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self.link.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.link.stop()
        self.outbox.close()

    @property
    def hub_connected(self) -> bool:
        return self.link.connected

    # submission -------------------------------------------------------------------------------
    def submit_record(self, kind: str, body: dict[str, Any], record_id: str | None = None) -> str:
        """Validate, sign and store a record durably; raise MessageError when refused.

        A ``record_id`` the sender chose may come again (a retry after a lost answer): one
        already in the outbox is accepted without a second copy."""
        given = record_id is not None
        record_id = record_id or new_record_id()
        model = BODY_MODELS[kind]
        try:
            model.model_validate(body)
        except ValidationError as exc:
            fields = ["body." + key for key in problem_keys(exc)]
            reason = describe_validation_error(exc, prefix="body.")
            raise MessageError(f"invalid {kind} record: {reason}", fields) from None
        # A record the sender may offer again must come out byte for byte the same (the hub
        # takes an ID it holds with the same digest as a duplicate, with another as a replay):
        # its time is the body's own, not the moment it was offered.
        at = body.get("at")
        created_at = float(at) if given and isinstance(at, int | float) else time.time()
        record = Record(
            record_id=record_id,
            device_id=self.device_id,
            kind=kind,
            created_at=created_at,
            body=body,
        ).signed(self.sealer.signing_key)
        try:
            self.outbox.submit(record_id, kind, record.encode())
        except OutboxFull as exc:
            self._notify_if_changed()
            raise MessageError(f"{exc} / {FULL_TEXT_JA}") from None
        except DuplicateRecord as exc:
            if given:
                return record_id
            raise MessageError(str(exc), ["record_id"]) from None
        self._wake.set()
        return record_id

    def submit_packet(self, request: SubmitPacket) -> str:
        record_id = new_record_id()
        body = self.sealer.seal_packet(request, record_id)
        return self.submit_record("packet", body, record_id)

    def status(self) -> OutboxStatus:
        state = self.outbox.state()
        return OutboxStatus(
            pending=state.pending,
            sent=state.sent,
            refused=state.refused,
            acked_total=state.acked_total,
            full=state.full,
            hub_connected=self.hub_connected,
            oldest_age_s=(time.time() - state.oldest_created_at)
            if state.oldest_created_at
            else None,
            text_ja=FULL_TEXT_JA if state.full else "",
            text_en=FULL_TEXT_EN if state.full else "",
        )

    def device_status(self) -> DeviceStatus:
        """The tablet's status for the hub's device page: counts and times only."""
        state = self.outbox.state()
        return DeviceStatus(
            at=time.time(),
            version=__version__,
            outbox_pending=state.pending + state.sent,
            outbox_refused=state.refused,
            outbox_oldest_at=state.oldest_created_at,
        )

    def _notify_if_changed(self) -> None:
        full = self.outbox.full
        if full != self._was_full:
            self._was_full = full
            log.warning("outbox is %s", "full" if full else "accepting again")
            if self.on_change is not None:
                self.on_change(self.status())

    # hub link ---------------------------------------------------------------------------------
    def _on_connect(self) -> None:
        # The hub keeps no retained messages: ask for the roster on every connect.
        self.announce()
        self._wake.set()

    def announce(self) -> bool:
        """Ask for the roster, with the tablet's status (the hub keeps the latest)."""
        self._install_receivers(None)
        request = RosterRequest(have=self.roster.version, status=self.device_status())
        return self.link.publish(roster_request_topic(self.device_id), request.encode())

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == roster_topic(self.device_id):
            self.apply_roster(payload)
            return
        try:
            acks = decode(payload, Acks)
        except MessageError as exc:
            log.warning("unreadable acknowledgement from the hub: %s", exc.reason)
            return
        if not self.downlink.accepts(acks):
            return
        self._acks.put(acks)
        self._wake.set()

    def apply_roster(self, payload: bytes) -> bool:
        """Keep a newer operator roster from the hub, on disk first; False if not taken.

        It must be signed for this tablet with the pinned hub key, and newer than ours. The
        receiver keys it carries are written into the bundle before the roster is kept
        (``fieldkit.sync.receivers``): a roster with a key that is not a public sealing key is
        refused whole; one whose keys cannot be written (the folder) is kept, and the keys are
        written again on each status round until they are."""
        try:
            roster = decode(payload, OperatorRoster)
        except MessageError as exc:
            log.warning("unreadable operator roster from the hub: %s", exc.reason)
            return False
        if not self.downlink.accepts(roster):
            return False
        if roster.version != roster.expected_version():
            log.warning("operator roster refused: its version does not match its operators")
            return False
        with self._roster_lock:
            if roster.version == self.roster.version:
                return False
            if not self.downlink.accepts_newer(roster, self.roster):
                return False
            keys: dict[str, bytes] | None = None
            if roster.receivers is not None:
                try:
                    keys = checked_keys(roster.receivers)
                except DownlinkRefused as exc:
                    log.warning("refused a message from the hub broker: %s; nothing changed", exc)
                    return False
                # Before the roster is kept: a crash in between leaves the old version, asked
                # for again. A folder sync cannot write does not hold the operators back (a
                # disabled operator must reach the tablet): tried again on every status round.
                self._install_receivers(keys)
            save_roster(self.settings.roster_path(), roster)
            save_roster(self.settings.roster_path(), roster)
            self.roster = roster
        log.info(
            "operator roster %s applied (%d operators)", roster.version[:12], len(roster.operators)
        )
        if self.on_roster is not None:
            self.on_roster(roster)
        return True

    def _install_receivers(self, keys: dict[str, bytes] | None) -> bool:
        """Make the bundle's receivers folder hold ``keys`` (None: the ones still to write)."""
        with self._receivers_lock:
            keys = self._receivers_pending if keys is None else keys
            if keys is None:
                return True
            try:
                changes = install_receivers(self.settings.bundle, keys)
            except OSError as exc:
                self._receivers_pending = keys
                log.error(
                    "receiver keys from the hub not written into the bundle (%s: %s); "
                    "trying again at the next status round",
                    exc.__class__.__name__,
                    exc.strerror or "",
                )
                return False
            self._receivers_pending = None
        if changes:
            log.info(
                "receiver keys from the hub: added %s, replaced %s, removed %s",
                ",".join(changes.added) or "-",
                ",".join(changes.replaced) or "-",
                ",".join(changes.removed) or "-",
            )
        return True

    # delivery ---------------------------------------------------------------------------------
    def _apply_acks(self) -> None:
        done: list[str] = []
        while True:
            try:
                acks = self._acks.get_nowait()
            except queue.Empty:
                break
            for ack in acks.items:
                self._in_flight.pop(ack.record_id, None)
                if ack.outcome == "refused":
                    # Not an ack: the record stays, marked, for the operator to see.
                    log.error("hub refused record %s: %s", ack.record_id, ack.reason)
                    self.outbox.refused(ack.record_id, ack.reason)
                else:
                    done.append(ack.record_id)
        if done:
            self.outbox.acked(done)
            if self.on_acked is not None:
                self.on_acked(done)
            self._notify_if_changed()

    def _send(self, record_id: str, payload: bytes) -> bool:
        if not self.link.publish(up_topic(self.device_id), payload):
            return False
        self._in_flight[record_id] = time.monotonic() + self.settings.ack_timeout
        return True

    def _deliver_loop(self) -> None:
        was_connected = False
        idle_checkpointed = False
        last_busy = time.monotonic()
        # The connect announced the status; then every ``status_interval`` while connected.
        next_status = time.monotonic() + self.settings.status_interval
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._apply_acks()
                connected = self.link.connected
                if connected and not was_connected:
                    self._in_flight.clear()
                    self.outbox.retry_sent_now()
                was_connected = connected
                if not connected:
                    continue
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + self.settings.status_interval
                    self.announce()
                self._in_flight = {r: t for r, t in self._in_flight.items() if t > now}
                room = self.settings.window - len(self._in_flight)

                due = self.outbox.take_due(
                    room, self.settings.ack_timeout, self.settings.backoff_max, self._send
                )
                if due or self._in_flight:
                    idle_checkpointed = False
                    last_busy = time.monotonic()
                if due:
                    self._wake.set()
                # Fold the WAL away once the outbox has been quiet for a while (not after every
                # record: a TRUNCATE checkpoint is two fsyncs that would sit in the next
                # submit's way).
                idle_for = time.monotonic() - last_busy
                if not idle_checkpointed and idle_for >= IDLE_CHECKPOINT_S:
                    self.outbox.checkpoint()
                    idle_checkpointed = True
            except Exception:
                log.exception("delivery round failed; retrying")
                time.sleep(0.5)
