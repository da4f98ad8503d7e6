"""The kit's revocation list on the hub: kept valid, and an alarm well before it lapses.

mosquitto refuses every device once the CRL's next update has passed, so a lapsed CRL stops
the whole programme. The ``hub-broker`` service signs it again when half its life is left
(``KitPki.renew_crl_if_due``, at start and every ``crl_check_seconds``); a daily timer on the
hub image does the same with ``fieldkit hub crl --renew-if-due`` (a hub whose broker service is
stopped still keeps it fresh). If renewing keeps failing (the CA key missing, a full disk),
the alarm is raised with a week to spare: on the hub web dashboard, in the broker's log every
hour, and as the exit status of the timer's command.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fieldkit.pki import KitPki

CRL_ALARM_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class CrlStatus:
    next_update: dt.datetime | None
    alarm: bool
    message: str

    @property
    def days_left(self) -> float | None:
        if self.next_update is None:
            return None
        return (self.next_update - dt.datetime.now(dt.UTC)).total_seconds() / 86400


def crl_status(pki: KitPki, alarm_before: dt.timedelta = CRL_ALARM_BEFORE) -> CrlStatus:
    """Whether the CRL is valid long enough; the message is for the admin (Japanese first)."""
    due = pki.crl_next_update()
    if due is None:
        return CrlStatus(
            None,
            True,
            "失効リスト(CRL)がありません。端末は接続できません / "
            "No revocation list (CRL): no tablet can connect",
        )
    left = due - dt.datetime.now(dt.UTC)
    when = due.strftime("%Y-%m-%d %H:%M UTC")
    if left <= dt.timedelta(0):
        return CrlStatus(
            due,
            True,
            f"失効リスト(CRL)の期限が切れました({when})。端末は接続できません / "
            f"The revocation list lapsed at {when}: no tablet can connect",
        )
    if left <= alarm_before:
        return CrlStatus(
            due,
            True,
            f"失効リスト(CRL)の期限が近づいています({when})。更新できていません / "
            f"The revocation list lapses at {when} and has not been renewed",
        )
    return CrlStatus(due, False, f"CRL valid until {when}")
