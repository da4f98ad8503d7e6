"""The session erasure handshake on the bus (architecture §4).

The wipe service broadcasts ``wipe/evt/session/<sid>/forget``. Every service whose spec says
``holds_personal_data`` zeroes what it held for that session and answers on
``<service>/evt/session/<sid>/forgotten`` with what it did. The wipe service knows from the
registry which holders must answer; one that does not answer in time fails the record, visibly.
"""

from __future__ import annotations

import gc
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from fieldkit.bus import Bus, BusError, Incoming
from fieldkit.messages import Message
from fieldkit.models import SESSION_ID_PATTERN

log = logging.getLogger(__name__)

FORGET_FILTER = "wipe/evt/session/+/forget"
FORGOTTEN_FILTER = "+/evt/session/+/forgotten"


class ForgetSession(Message):
    """Forget everything held for session ``sid``."""

    type: Literal["forget-session"] = "forget-session"
    sid: str = Field(pattern=SESSION_ID_PATTERN)


class SessionForgotten(Message):
    """What a holder did to forget a session: each item names a kind of thing, never its value."""

    type: Literal["session-forgotten"] = "session-forgotten"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    service: str
    erased: list[str] = Field(default_factory=list)
    ok: bool = True
    problem: str | None = None


def forget_topic(sid: str) -> str:
    return f"wipe/evt/session/{sid}/forget"


def forgotten_topic(service: str, sid: str) -> str:
    return f"{service}/evt/session/{sid}/forgotten"


Forgetter = Callable[[str], list[str]]


def drop_interpreter_copies() -> None:
    """Free the copies the interpreter itself keeps of what a holder handled.

    ``urllib.parse.urlsplit`` caches its last 128 results (Python 3.11): the online
    application's link, with the ID in it, stayed in the kiosk and capture after every forget
    (found by the memory scan). What the holder dropped in reference cycles is freed now, not
    at some later collection; with the runner's scrub (``fieldkit.processes``) every freed
    block is overwritten at once.
    """
    clear: Callable[[], None] | None = getattr(urllib.parse, "clear_cache", None)  # not typed
    if clear is not None:
        clear()
    gc.collect()


def serve_forget_requests(bus: Bus, forget: Forgetter) -> None:
    """Make this service a holder: ``forget(sid)`` zeroes its data and lists what it erased."""

    def on_forget(request: ForgetSession, meta: Incoming) -> None:
        # Off the bus thread: forgetting may wait for other threads (the print desk purging
        # CUPS), and the bus must keep delivering meanwhile.
        threading.Thread(
            target=forget_and_answer, args=(request,), name=f"forget-{bus.identity}", daemon=True
        ).start()

    def forget_and_answer(request: ForgetSession) -> None:
        try:
            erased = forget(request.sid)
            drop_interpreter_copies()
            answer = SessionForgotten(sid=request.sid, service=bus.identity, erased=erased)
        except Exception as exc:
            # The type only: the message of an exception may carry what it was handling.
            log.exception("forgetting session %s failed", request.sid)
            answer = SessionForgotten(
                sid=request.sid, service=bus.identity, ok=False, problem=type(exc).__name__
            )
        try:
            bus.publish(forgotten_topic(bus.identity, request.sid), answer)
        except BusError as exc:
            # The wipe then records this holder as not answered; nothing more to do here.
            log.warning("could not answer the forget request for session %s: %s", request.sid, exc)

    bus.handle_event(FORGET_FILTER, ForgetSession, on_forget)
