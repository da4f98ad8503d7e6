"""Operator credentials and lockout (R13).

Operators come from two places: the device config (``[[kiosk.operators]]``, set when the
tablet is provisioned) and the hub's handler registry, which sync receives on the tablet's
downlink and passes on (``sync/evt/operators``, and the ``operators`` request at start). For
every ID the hub names, the hub's entry wins: disabling or resetting a password on the hub
takes effect on the tablet, logged-in operators included. IDs only in the config stay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fieldkit.bus import Bus, BusError, Incoming, RequestRefused
from fieldkit.kiosk.settings import OperatorEntry
from fieldkit.sync.messages import OperatorsRequest
from fieldkit.sync.wire import OperatorRoster, RosterVisit

log = logging.getLogger(__name__)
# How long the kiosk keeps asking sync for the roster at start (sync may start after it).
ROSTER_ATTEMPTS = 12
ROSTER_RETRY_S = 5.0

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash, as the hub pushes them and the config stores them."""
    return _hasher.hash(password)


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class LoginRefused(Exception):
    """Why a login failed, in words for the operator (never which part was wrong)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OperatorRegistry:
    """Checks operator ID and password; locks an ID after repeated failures."""

    def __init__(
        self,
        operators: list[OperatorEntry],
        *,
        max_failures: int,
        lockout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configured = {o.id: o for o in operators}
        self._operators = dict(self._configured)
        self.roster_version = ""
        self._roster_issued = -1.0
        # The planned visits that came with the roster (every device's; issue 23 item 2).
        self._visits: list[RosterVisit] = []
        self._max = max_failures
        self._lockout = lockout_seconds
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()
        # Verifying unknown IDs against a dummy hash keeps timing from revealing which IDs exist.
        self._dummy = hash_password("fieldkit-no-such-operator")

    def apply_roster(self, roster: OperatorRoster) -> bool:
        """Take the hub's roster unless it is older than the one in force."""
        with self._lock:
            if roster.issued_at <= self._roster_issued or not roster.version:
                return False
            from_hub = {
                o.id: OperatorEntry(
                    id=o.id, name=o.name, password_hash=o.password_hash, disabled=o.disabled
                )
                for o in roster.operators
            }
            self._operators = {**self._configured, **from_hub}
            self._visits = list(roster.visits)
            self.roster_version = roster.version
            self._roster_issued = roster.issued_at
        return True

    def follow(self, bus: Bus) -> None:
        """Take every roster sync passes on, and ask it for the one it holds now."""

        def on_roster(roster: OperatorRoster, meta: Incoming) -> None:
            if self.apply_roster(roster):
                log.info("operator roster %s in force", roster.version[:12])

        bus.handle_event("sync/evt/operators", OperatorRoster, on_roster)

        def ask() -> None:
            for _ in range(ROSTER_ATTEMPTS):
                try:
                    roster = bus.request("sync", "operators", OperatorsRequest(), OperatorRoster)
                except RequestRefused as exc:
                    log.warning("no operator roster from sync: %s", exc)
                    return
                except BusError:
                    time.sleep(ROSTER_RETRY_S)
                    continue
                if self.apply_roster(roster):
                    log.info("operator roster %s in force", roster.version[:12])
                return
            log.warning("sync did not answer for the operator roster; configured operators only")

        threading.Thread(target=ask, name="kiosk-roster", daemon=True).start()

    def visits_on(self, device_id: str, date: str) -> list[RosterVisit]:
        """This device's planned visits on ``date``, as the last roster from the hub has them."""
        with self._lock:
            return [v for v in self._visits if v.device_id == device_id and v.date == date]

    def get(self, operator_id: str) -> OperatorEntry | None:
        entry = self._operators.get(operator_id)
        return entry if entry is not None and not entry.disabled else None

    def locked_for(self, operator_id: str) -> float:
        """Seconds this ID stays locked (0 if not locked)."""
        with self._lock:
            state = self._failures.get(operator_id)
            return max(0.0, state.locked_until - self._clock()) if state else 0.0

    def authenticate(self, operator_id: str, password: str) -> OperatorEntry:
        if self.locked_for(operator_id) > 0:
            raise LoginRefused("locked")
        entry = self.get(operator_id)
        try:
            _hasher.verify(entry.password_hash if entry else self._dummy, password)
        except (VerificationError, InvalidHashError):
            self._record_failure(operator_id)
            raise LoginRefused("locked" if self.locked_for(operator_id) > 0 else "wrong") from None
        if entry is None:
            self._record_failure(operator_id)
            raise LoginRefused("wrong")
        with self._lock:
            self._failures.pop(operator_id, None)
        return entry

    def _record_failure(self, operator_id: str) -> None:
        now = self._clock()
        with self._lock:
            state = self._failures.setdefault(operator_id, _Failures())
            state.times = [t for t in state.times if now - t < self._lockout] + [now]
            if len(state.times) >= self._max:
                state.locked_until = now + self._lockout
                state.times = []
