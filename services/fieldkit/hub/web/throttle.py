"""Login throttling (issue 17): by account and address, by address, and for everyone.

Every count and every block is a database row, so all gunicorn workers see the same state.
Three limits, each "so many failures within so many minutes, then blocked for those minutes":

- **account from one address** (``lockout_*``): locks the pair, not the account, so a stranger
  guessing ``admin`` from elsewhere locks only himself out;
- **address** (``address_*``): whatever names it tries, so one address spraying a password
  over many accounts stops after a few;
- **global** (``global_*``): a spray from many addresses; while it holds, only addresses where
  someone completed a login within ``known_address_days`` may try.

A failure is a wrong password (or a name nobody has, or a disabled account) or a wrong second-
factor code. Attempts refused because of a block are not counted again (one stranger hammering
cannot raise the global count), and they are each in the audit log, as is each block.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from fieldkit.hub.web import audit
from fieldkit.hub.web.models import LoginAttemptRow, LoginBlockRow
from fieldkit.hub.web.settings import HubWebSection

UNKNOWN = "?"  # the audit's name for a name nobody has (it may be a mistyped password)


@dataclass(frozen=True)
class Attempt:
    """Who tries from where: ``username`` is empty unless the name exists."""

    address: str
    username: str


class LoginGuard:
    """The throttle's decisions, on the request's database session (the caller commits)."""

    def __init__(self, session: Session, settings: HubWebSection, now: float | None = None):
        self.session = session
        self.settings = settings
        self.now = time.time() if now is None else now

    def refusal(self, attempt: Attempt) -> str | None:
        """The block that stops this attempt (``account``, ``address``, ``global``), if any."""
        blocks = self.session.scalars(
            select(LoginBlockRow).where(
                LoginBlockRow.until > self.now,
                or_(
                    LoginBlockRow.scope == "global",
                    (LoginBlockRow.scope == "address") & (LoginBlockRow.address == attempt.address),
                    (LoginBlockRow.scope == "account")
                    & (LoginBlockRow.address == attempt.address)
                    & (LoginBlockRow.username == attempt.username)
                    & (LoginBlockRow.username != ""),
                ),
            )
        ).all()
        scopes = {b.scope for b in blocks}
        for scope in ("account", "address"):
            if scope in scopes:
                return scope
        if "global" in scopes:
            if self.known_address(attempt.address):
                audit.record(
                    self.session,
                    attempt.username or UNKNOWN,
                    "login-throttle-passed",
                    attempt.username or UNKNOWN,
                    address=attempt.address,
                    scope="global",
                )
                return None
            return "global"
        return None

    def refuse(self, attempt: Attempt, scope: str) -> None:
        audit.record(
            self.session,
            attempt.username or UNKNOWN,
            "login-refused",
            attempt.username or UNKNOWN,
            address=attempt.address,
            scope=scope,
        )

    def known_address(self, address: str) -> bool:
        since = self.now - self.settings.known_address_days * 86400
        return (
            self.session.scalar(
                select(LoginAttemptRow.id)
                .where(
                    LoginAttemptRow.ok.is_(True),
                    LoginAttemptRow.address == address,
                    LoginAttemptRow.at > since,
                )
                .limit(1)
            )
            is not None
        )

    def failed(self, attempt: Attempt) -> list[str]:
        """Count a failure; impose the blocks it completes. Returns their scopes."""
        self.session.add(
            LoginAttemptRow(
                at=self.now, address=attempt.address, username=attempt.username, ok=False
            )
        )
        self.session.flush()
        s = self.settings
        imposed = []
        # The same queries for a name nobody has (counted under ""), so the time taken does
        # not tell; only a real account's pair is ever blocked.
        last_ok = self.session.scalar(
            select(func.max(LoginAttemptRow.at)).where(
                LoginAttemptRow.ok.is_(True),
                LoginAttemptRow.address == attempt.address,
                LoginAttemptRow.username == attempt.username,
            )
        )
        since = max(self.now - s.lockout_minutes * 60, last_ok or 0.0)
        pair = self._failures(since, address=attempt.address, username=attempt.username)
        if attempt.username and pair >= s.lockout_failures:
            imposed.append(self._block("account", attempt, s.lockout_minutes))
        if (
            self._failures(self.now - s.address_minutes * 60, address=attempt.address)
            >= s.address_failures
        ):
            imposed.append(self._block("address", attempt, s.address_minutes))
        if self._failures(
            self.now - s.global_minutes * 60
        ) >= s.global_failures and not self._active("global"):
            imposed.append(self._block("global", attempt, s.global_minutes))
        return imposed

    def succeeded(self, attempt: Attempt) -> None:
        """A completed login: ends the pair's count, and makes the address known."""
        self.session.add(
            LoginAttemptRow(
                at=self.now, address=attempt.address, username=attempt.username, ok=True
            )
        )

    def prune(self) -> None:
        """Forget failures older than every window, and logins older than ``known_address_days``."""
        s = self.settings
        longest = max(s.lockout_minutes, s.address_minutes, s.global_minutes) * 60
        self.session.execute(
            delete(LoginAttemptRow).where(
                or_(
                    LoginAttemptRow.ok.is_(False) & (LoginAttemptRow.at < self.now - longest),
                    LoginAttemptRow.at < self.now - s.known_address_days * 86400,
                )
            )
        )
        self.session.execute(delete(LoginBlockRow).where(LoginBlockRow.until < self.now))

    def _failures(
        self, since: float, address: str | None = None, username: str | None = None
    ) -> int:
        query = select(func.count(LoginAttemptRow.id)).where(
            LoginAttemptRow.ok.is_(False), LoginAttemptRow.at > since
        )
        if address is not None:
            query = query.where(LoginAttemptRow.address == address)
        if username is not None:
            query = query.where(LoginAttemptRow.username == username)
        return int(self.session.scalar(query) or 0)

    def _active(self, scope: str) -> bool:
        return (
            self.session.scalar(
                select(LoginBlockRow.id)
                .where(LoginBlockRow.scope == scope, LoginBlockRow.until > self.now)
                .limit(1)
            )
            is not None
        )

    def _block(self, scope: str, attempt: Attempt, minutes: int) -> str:
        until = self.now + minutes * 60
        self.session.add(
            LoginBlockRow(
                scope=scope,
                address="" if scope == "global" else attempt.address,
                username=attempt.username if scope == "account" else "",
                since=self.now,
                until=until,
            )
        )
        audit.record(
            self.session,
            attempt.username or UNKNOWN,
            "login-throttled",
            attempt.username if scope == "account" else "",
            address=attempt.address,
            scope=scope,
            minutes=minutes,
            until=int(until),
        )
        return scope
