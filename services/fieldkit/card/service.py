"""The card service: reads the card in the reader when asked, and forgets it with the session.

Requests (``<sender>/req/card/<op>``): ``read`` (ReadCard -> CardReport).

A read runs on the bus thread: it is a few APDUs (tens of milliseconds on a CCID reader, see
``bench/card.py``), far under the watchdog's half period, and it never waits for a card to be
placed (the kiosk asks again). What was read lives in memory only: without a session it is
zeroed as soon as the report is made; with one it is kept, zeroed, until that session's forget
(``fieldkit.erasure``), and its canaries go to the wipe for the residue scan (docs/card.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from fieldkit.bus import Bus, BusError, Incoming
from fieldkit.card.certificate import CertificateUnreadable, canaries, describe, parse
from fieldkit.card.jpki import CertificateRead
from fieldkit.card.messages import CardCertificate, CardReport, CardState, ReadCard
from fieldkit.card.reader import read_card, use_socket
from fieldkit.card.settings import CardSection
from fieldkit.erasure import serve_forget_requests
from fieldkit.runner import ServiceContext
from fieldkit.wipe.messages import MarkersAccepted, SessionMarkers

log = logging.getLogger(__name__)
MARKERS_TIMEOUT = 5.0


class CardDesk:
    """Reads cards and holds what a session read until that session is forgotten."""

    def __init__(self, settings: CardSection, send_markers: queue.Queue[SessionMarkers | None]):
        self.settings = settings
        self._send_markers = send_markers
        self._lock = threading.Lock()
        self._held: dict[str, list[CertificateRead]] = {}
        use_socket(settings.pcscd_socket)

    def read(self, request: ReadCard, meta: Incoming | None = None) -> CardReport:
        read_at = time.time()
        result = read_card(self.settings.reader, self.settings.chunk_bytes)
        if result.problem:
            # Fixed text and PC/SC codes only: never what the card answered.
            log.info("card read: %s (%s)", result.state, result.problem)
        certificate = result.certificate
        if certificate is None:
            return self._report(result.state, result.reader, read_at, result.seconds)
        try:
            parsed = parse(certificate.der)
        except CertificateUnreadable as exc:
            certificate.zero()
            log.info("card read: unreadable (%s)", exc)
            return self._report("unreadable", result.reader, read_at, result.seconds)
        report = self._report(
            "ok", result.reader, read_at, result.seconds, describe(parsed), my_number_card=True
        )
        if request.sid is None:
            certificate.zero()  # staff checked a card outside an application: nothing is kept
        else:
            with self._lock:
                self._held.setdefault(request.sid, []).append(certificate)
            found = canaries(parsed)
            if found.serial or found.subject:
                self._send_markers.put(
                    SessionMarkers(
                        sid=request.sid,
                        card_serial_hex=found.serial.hex() if found.serial else None,
                        card_subject=found.subject,
                    )
                )
            del found
        del parsed
        return report

    def _report(
        self,
        state: CardState,
        reader: str | None,
        read_at: float,
        seconds: float,
        certificate: CardCertificate | None = None,
        my_number_card: bool = False,
    ) -> CardReport:
        return CardReport(
            state=state,
            present=state in {"ok", "not-jpki", "unreadable"},
            readable=state in {"ok", "not-jpki"},
            my_number_card=my_number_card,
            certificate=certificate,
            reader=reader,
            read_at=read_at,
            seconds=round(seconds, 4),
        )

    def forget(self, sid: str) -> list[str]:
        """The wipe's forget handshake: zero every certificate the session read (R6)."""
        with self._lock:
            held = self._held.pop(sid, [])
        for certificate in held:
            certificate.zero()
        return [f"card certificates read in the session ({len(held)}), zeroed"]

    def held_sessions(self) -> int:
        with self._lock:
            return len(self._held)


def send_markers_to_wipe(bus: Bus, outbox: queue.Queue[SessionMarkers | None]) -> None:
    """Off the bus thread (a handler may not request): hand each session's canaries to the wipe."""
    while (markers := outbox.get()) is not None:
        try:
            bus.request("wipe", "session-markers", markers, MarkersAccepted, MARKERS_TIMEOUT)
        except BusError as exc:
            # The session's wipe still scans its other markers and the daily patterns.
            log.warning("could not give the wipe the card markers of session %s: %s",
                        markers.sid, type(exc).__name__)  # fmt: skip
        del markers


def setup(ctx: ServiceContext) -> None:
    outbox: queue.Queue[SessionMarkers | None] = queue.Queue()
    desk = CardDesk(ctx.config.card, outbox)
    sender = threading.Thread(
        target=send_markers_to_wipe, args=(ctx.bus, outbox), name="card-markers", daemon=True
    )
    sender.start()

    def stop_sender() -> None:
        outbox.put(None)
        sender.join(5)

    ctx.on_stop(stop_sender)
    ctx.bus.handle_request("read", ReadCard, desk.read)
    serve_forget_requests(ctx.bus, desk.forget)
