"""The operator's seat at this tablet (R13): one operator logged in at a time, held on the server.

The login lives here, not in the browser's cookie: the cookie carries only the seat's token for
this login (``Operator.get_id``), so the server ends a login by itself (idle logout, a takeover)
and a cookie of an ended login is worth nothing. Only what the operator does counts as activity;
the page's polls (``/live``) do not, or an open camera page would keep a login alive forever.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class SeatTaken(Exception):
    """Another operator's applicant session is open: no second login until it is closed."""


@dataclass(frozen=True)
class Login:
    """One operator's login: who, and the token only that login's cookie carries."""

    operator: str
    token: str


class Seat:
    """Who is logged in on this tablet, since when they last did something, and why the last
    login ended (the login page says so: nobody is there to read a message at the time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._login: Login | None = None
        self._last_active = 0.0
        self.ended_reason: str | None = None

    @property
    def operator(self) -> str | None:
        login = self._login
        return login.operator if login is not None else None

    def holder(self, token: str) -> str | None:
        """The operator whose login ``token`` is, while it is the seat's login; else None."""
        login = self._login
        if login is None or not secrets.compare_digest(login.token, token):
            return None
        return login.operator

    def take(
        self, operator: str, open_session: Callable[[], str | None]
    ) -> tuple[Login, str | None]:
        """Log ``operator`` in; returns the login and the operator whose login it replaced.

        Refused (``SeatTaken``) while an applicant session of another operator is open
        (``open_session`` names its operator, asked under the seat's lock so no session starts
        in between: ``while_seated``); the session's own operator may log in again (their
        browser was restarted) and carries on. With no session open, a new login replaces the
        one before (the shift changed).
        """
        with self._lock:
            holder = open_session()
            if holder is not None and holder != operator:
                raise SeatTaken(holder)
            before = self.operator
            self._login = Login(operator, secrets.token_urlsafe(24))
            self._last_active = time.monotonic()
            self.ended_reason = None
            return self._login, before

    def while_seated(self, token: str, act: Callable[[], T]) -> T | None:
        """``act()`` while ``token`` is the seat's login, with no login in between; else None."""
        with self._lock:
            login = self._login
            if login is None or not secrets.compare_digest(login.token, token):
                return None
            return act()

    def touch(self, token: str) -> None:
        """The seat's operator did something (a page, a button; never a poll)."""
        with self._lock:
            if self._login is not None and secrets.compare_digest(self._login.token, token):
                self._last_active = time.monotonic()

    def end(self, token: str, reason: str) -> str | None:
        """End the login whose cookie carries ``token`` (only that one); returns its operator."""
        with self._lock:
            login = self._login
            if login is None or not secrets.compare_digest(login.token, token):
                return None
            self._login = None
            self.ended_reason = reason
            return login.operator

    def end_if_idle(self, limit_seconds: float) -> str | None:
        """End the login when its operator did nothing for ``limit_seconds``; returns who."""
        with self._lock:
            login = self._login
            if login is None or time.monotonic() - self._last_active <= limit_seconds:
                return None
            self._login = None
            self.ended_reason = "idle"
            return login.operator
