"""The session wipe as staff watch it (issue 21 item 6): which parts of the tablet have erased
the session so far, then the check that nothing is left, then the verdict.

The wipe service says so on the bus: every holder answers its forget handshake with
``SessionForgotten`` on ``<service>/evt/session/<sid>/forgotten``; once all have, the wipe purges
and scans; its reply to the kiosk is the verdict. The kiosk only listens; what it keeps here is
the session id and service names, nothing of the applicant.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from fieldkit.erasure import SessionForgotten
from fieldkit.kiosk.text import TEXT, Lang, say

FORGOTTEN_TOPIC = "+/evt/session/+/forgotten"


@dataclass
class WipeProgress:
    """One wipe of one session, as far as it has come."""

    sid: str
    holders: list[str]
    started: float = field(default_factory=time.monotonic)
    answered: dict[str, bool] = field(default_factory=dict)
    ok: bool | None = None

    @property
    def scanning(self) -> bool:
        return self.ok is None and set(self.holders) <= set(self.answered)

    def words(self, lang: Lang) -> str:
        """Where the wipe is, in plain words (the page after it says the verdict)."""
        if self.scanning:
            return say("wipe_scanning", lang)
        if not self.answered:
            return say("wipe_running", lang)
        names = [holder_name(name, lang) for name in self.holders if name in self.answered]
        joined = ("、" if lang == "ja" else ", ").join(names)
        return say("wipe_forgetting", lang).format(
            done=len(names), total=len(self.holders), names=joined
        )


def holder_name(service: str, lang: Lang) -> str:
    key = f"holder:{service}"
    return say(key if key in TEXT else "holder:other", lang)


class WipeWatch:
    """The wipe in progress (or the last one), fed by the holders' answers on the bus."""

    def __init__(self, holders: list[str]) -> None:
        self.holders = holders
        self._lock = threading.Lock()
        self.current: WipeProgress | None = None

    def begin(self, sid: str) -> None:
        with self._lock:
            self.current = WipeProgress(sid, list(self.holders))

    def forgotten(self, answer: SessionForgotten) -> None:
        with self._lock:
            progress = self.current
            if progress is not None and progress.sid == answer.sid and progress.ok is None:
                progress.answered[answer.service] = answer.ok

    def finished(self, sid: str, ok: bool) -> None:
        with self._lock:
            progress = self.current
            if progress is not None and progress.sid == sid:
                progress.ok = ok

    def words(self, lang: Lang) -> str:
        """What the page shows while a wipe runs; empty when none does (the verdict is the
        next page's news: a poll before this wipe began must not show the last one's)."""
        with self._lock:
            progress = self.current
            return "" if progress is None or progress.ok is not None else progress.words(lang)
