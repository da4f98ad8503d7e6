"""The card in the reader, through pcscd (PC/SC, pyscard's ``scard`` layer).

One ``read_card`` call opens a PC/SC context, finds the reader, connects to the card, runs the
JPKI read (``fieldkit.card.jpki``) and closes everything again: pcscd may have restarted or the
reader may have been unplugged since the last read. Every PC/SC failure becomes a state word
(``CardState``), never an exception with card data in it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartcard import scard

from fieldkit.card.jpki import CertificateRead, JpkiError, NotJpki, read_user_auth_certificate
from fieldkit.card.messages import CardState

SOCKET_ENV = "PCSCLITE_CSOCK_NAME"
# After a failed command: how long to wait for pcscd to see the card go (it polls every 400 ms).
REMOVAL_WAIT_MS = 1200
U32 = 0xFFFFFFFF


def _code(name: str) -> int:
    value: int = getattr(scard, name)
    return value & U32


SUCCESS = _code("SCARD_S_SUCCESS")
NO_SERVICE = {_code("SCARD_E_NO_SERVICE"), _code("SCARD_E_SERVICE_STOPPED")}
NO_READERS = {_code("SCARD_E_NO_READERS_AVAILABLE"), _code("SCARD_E_UNKNOWN_READER")}
NO_CARD = {_code("SCARD_E_NO_SMARTCARD"), _code("SCARD_W_REMOVED_CARD")}
READER_GONE = {_code("SCARD_E_READER_UNAVAILABLE")}


class PcscFailure(Exception):
    """A PC/SC call failed; ``state`` is what it means for the staff. Fixed text only."""

    def __init__(self, state: CardState, what: str, code: int = 0) -> None:
        super().__init__(f"{what}: {scard_error(code)}" if code else what)
        self.state: CardState = state
        self.code = code


def scard_error(code: int) -> str:
    text: str = scard.SCardGetErrorMessage(code)
    return f"{text} (0x{code & U32:08X})"


def use_socket(path: Path | None) -> None:
    """Point the PC/SC library at pcscd's socket (read at the process's first PC/SC call)."""
    if path is not None:
        os.environ[SOCKET_ENV] = str(path)


@contextmanager
def pcsc_context() -> Iterator[Any]:
    result, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if result & U32 != SUCCESS:
        raise PcscFailure(_state_for(result, "no-service"), "no PC/SC context", result)
    try:
        yield context
    finally:
        scard.SCardReleaseContext(context)


def list_readers(context: Any) -> list[str]:
    result, readers = scard.SCardListReaders(context, [])
    if result & U32 in NO_READERS:
        return []
    if result & U32 != SUCCESS:
        raise PcscFailure(_state_for(result, "no-reader"), "readers not listed", result)
    return [str(r) for r in readers]


def choose_reader(readers: list[str], wanted: str | None) -> str:
    """The reader to use: the one named in the config, or the only one."""
    if wanted is not None:
        named = [r for r in readers if wanted in r]
        if not named:
            raise PcscFailure("no-reader", "the configured reader is not connected")
        readers = named
    if not readers:
        raise PcscFailure("no-reader", "no reader is connected")
    if len(readers) > 1:
        raise PcscFailure("several-readers", f"{len(readers)} readers and none chosen")
    return readers[0]


@dataclass
class CardConnection:
    """A connected card: ``transmit`` for ``fieldkit.card.jpki``."""

    context: Any
    card: Any
    protocol: int
    reader: str

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        result, response = scard.SCardTransmit(self.card, self.protocol, list(apdu))
        if result & U32 != SUCCESS:
            raise PcscFailure(self.state_after_failure(result), "transmit failed", result)
        if len(response) < 2:
            # What a reader returns when the card went mid-command (vpcd, some CCID readers).
            raise PcscFailure(self.state_after_failure(0), "the card's answer has no status word")
        return bytes(response[:-2]), response[-2] << 8 | response[-1]

    def state_after_failure(self, result: int) -> CardState:
        """A transmit failed: was the card taken out, the reader unplugged, or the card faulty?"""
        if result & U32 in NO_CARD:
            return "removed"
        if result & U32 in READER_GONE:
            return "no-reader"
        if result & U32 in NO_SERVICE:
            return "no-service"
        return "removed" if self.removed_within(REMOVAL_WAIT_MS) else "unreadable"

    def removed_within(self, milliseconds: int) -> bool:
        """Whether the card is gone now or leaves within ``milliseconds``.

        pcscd notices a removal at its next poll of the reader (every 400 ms for a serial
        driver), so a command that failed because the card went is often answered before
        the reader's state says so."""
        result, found = scard.SCardGetStatusChange(
            self.context, 0, [(self.reader, scard.SCARD_STATE_UNAWARE)]
        )
        if result & U32 != SUCCESS or not found:
            return True
        state = found[0][1]
        if not state & scard.SCARD_STATE_PRESENT:
            return True
        result, found = scard.SCardGetStatusChange(
            self.context, milliseconds, [(self.reader, state & ~scard.SCARD_STATE_CHANGED)]
        )
        if result & U32 != SUCCESS or not found:
            return False  # timed out: the card is still there
        return not found[0][1] & scard.SCARD_STATE_PRESENT


@contextmanager
def connect(context: Any, reader: str) -> Iterator[CardConnection]:
    result, card, protocol = scard.SCardConnect(
        context, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
    )
    if result & U32 != SUCCESS:
        raise PcscFailure(_state_for(result, "unreadable"), "card not connected", result)
    try:
        yield CardConnection(context, card, protocol, reader)
    finally:
        # Reset on the way out: the card leaves the reader with no application selected.
        scard.SCardDisconnect(card, scard.SCARD_RESET_CARD)


@dataclass
class CardRead:
    """One read: the state, the reader, and the certificate when there was one."""

    state: CardState
    reader: str | None
    certificate: CertificateRead | None
    seconds: float
    problem: str | None = None  # fixed text for the log (never card data)


def read_card(wanted_reader: str | None, chunk: int = 256) -> CardRead:
    """Read the JPKI user-authentication certificate of the card in the reader, if any."""
    started = time.perf_counter()
    reader: str | None = None
    try:
        with pcsc_context() as context:
            reader = choose_reader(list_readers(context), wanted_reader)
            with connect(context, reader) as card:
                certificate = read_user_auth_certificate(card.transmit, chunk)
    except PcscFailure as exc:
        return CardRead(exc.state, reader, None, time.perf_counter() - started, str(exc))
    except NotJpki:
        return CardRead("not-jpki", reader, None, time.perf_counter() - started)
    except JpkiError as exc:
        return CardRead("unreadable", reader, None, time.perf_counter() - started, str(exc))
    return CardRead("ok", reader, certificate, time.perf_counter() - started)


def _state_for(result: int, otherwise: CardState) -> CardState:
    code = result & U32
    if code in NO_SERVICE:
        return "no-service"
    if code in NO_READERS or code in READER_GONE:
        return "no-reader"
    if code in NO_CARD:
        return "no-card"
    return otherwise
