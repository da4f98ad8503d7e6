"""Operator credentials and lockout (R13)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fieldkit.kiosk.settings import OperatorEntry

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
        self._operators = {o.id: o for o in operators}
        self._max = max_failures
        self._lockout = lockout_seconds
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()
        # Verifying unknown IDs against a dummy hash keeps timing from revealing which IDs exist.
        self._dummy = hash_password("fieldkit-no-such-operator")

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
