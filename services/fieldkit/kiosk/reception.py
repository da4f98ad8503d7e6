"""The reception number (受付番号) on the receipt: short digits staff can read out on the phone.

``PP SSSS C``: the tablet's two-digit prefix (``[kiosk] reception_prefix``, one per tablet of a
kit), the day's running number on this tablet (0001, 0002 ...), and a Luhn check digit over the
six, so a number misheard or mistyped on the phone is caught (every single wrong digit, and
every swap of two neighbouring digits but 0↔9). It is made from nothing about the applicant:
the same applicant on another day gets another number, and the number says nothing of them.

The running number restarts each day (Japan time). It is unique per tablet and day because the
day's numbers issued so far are counted from the kiosk's audit trail when the kiosk starts
(one ``submitted`` event per number), so a restart continues the count instead of repeating it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

JST = ZoneInfo("Asia/Tokyo")
SEQUENCE_DIGITS = 4
# The audit action each issued number goes with (``Counter.submit``).
ISSUED_ACTION = "submitted"


class ReceptionNumbersExhausted(Exception):
    """The tablet issued every number of the day (9999)."""


def luhn_check_digit(digits: str) -> int:
    """The Luhn (ISO/IEC 7812-1) check digit to append to ``digits``."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: the digit next to the check digit, then every other
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return (10 - total % 10) % 10


def luhn_valid(number: str) -> bool:
    """Whether the last digit of ``number`` is the Luhn check digit of the others."""
    return (
        len(number) >= 2
        and number.isascii()
        and number.isdigit()
        and luhn_check_digit(number[:-1]) == int(number[-1])
    )


def jst_day(timestamp: float) -> date:
    return datetime.fromtimestamp(timestamp, JST).date()


def issued_on(day: date, trail: Iterable[dict[str, Any]]) -> int:
    """How many reception numbers the audit trail shows issued on ``day``."""
    count = 0
    for entry in trail:
        event = entry.get("event", {})
        if event.get("action") == ISSUED_ACTION and jst_day(float(event.get("at", 0))) == day:
            count += 1
    return count


class ReceptionNumbers:
    """Issues the tablet's reception numbers, one per submitted application."""

    def __init__(
        self,
        prefix: str,
        trail: Iterable[dict[str, Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(prefix) != 2 or not prefix.isascii() or not prefix.isdigit():
            raise ValueError("the reception prefix is two digits")
        self.prefix = prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._day = jst_day(clock())
        self._issued = issued_on(self._day, trail)

    def issue(self) -> str:
        """The next number of today: seven digits, the last a Luhn check digit."""
        with self._lock:
            today = jst_day(self._clock())
            if today != self._day:
                self._day, self._issued = today, 0
            if self._issued >= 10**SEQUENCE_DIGITS - 1:
                raise ReceptionNumbersExhausted("no reception number is left for today")
            self._issued += 1
            body = f"{self.prefix}{self._issued:0{SEQUENCE_DIGITS}d}"
            return f"{body}{luhn_check_digit(body)}"
