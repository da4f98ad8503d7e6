"""The tablet's check of what comes down from the hub (issue 17 item 3, R16).

A message from the hub broker is acted on only when it is signed with the hub downlink key
pinned at enrolment (``HUB_DOWNLINK_KEY_FILE`` in the enrolment directory), for this device,
and fresh: a nonce seen before is a replay, an ack issued well before the newest one taken is
stale, and so is an operator roster not newer than the one installed (``check_newer``: a
replayed old roster would bring back a disabled operator or an old password). A refused
message changes nothing; the log line says why, never what it held.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fieldkit.pki import PkiError, load_ed25519_public
from fieldkit.sync.wire import (
    HUB_DOWNLINK_KEY_FILE,
    Acks,
    Downlink,
    DownlinkRefused,
    OperatorRoster,
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Downlink)

# Acks come in the order the hub sent them (one publisher, QoS 1); this much slack covers a
# hub clock corrected by NTP. A genuine ack replayed later names records the hub has committed
# (deleting them is what it was for), so this is a second line, not the first.
ACK_REORDER_S = 300.0
# Nonces remembered against replays (acks come in batches: this is hours of a busy tablet).
NONCES_KEPT = 20_000


class DownlinkGuard:
    """Verifies downlink messages for one device against the pinned hub key."""

    def __init__(self, bundle: Path, device_id: str) -> None:
        path = bundle / HUB_DOWNLINK_KEY_FILE
        try:
            self.key = load_ed25519_public(path)
        except FileNotFoundError:
            raise PkiError(
                f"no hub downlink key pinned at {path}: enrol this tablet again"
            ) from None
        self.device_id = device_id
        self._lock = threading.Lock()
        self._nonces: set[str] = set()
        self._order: deque[str] = deque()
        self._newest_ack = 0.0

    def check(self, message: Downlink) -> None:
        """Raise ``DownlinkRefused`` unless ``message`` is the hub's, for us, and new."""
        message.verify(self.key, self.device_id)
        with self._lock:
            if message.nonce in self._nonces:
                raise DownlinkRefused(f"{message.type} replayed (its nonce was seen before)")
            if isinstance(message, Acks):
                if message.issued_at < self._newest_ack - ACK_REORDER_S:
                    raise DownlinkRefused("acks stale (issued long before the newest taken)")
                self._newest_ack = max(self._newest_ack, message.issued_at)
            self._nonces.add(message.nonce)
            self._order.append(message.nonce)
            if len(self._order) > NONCES_KEPT:
                self._nonces.discard(self._order.popleft())

    def check_newer(self, roster: OperatorRoster, installed: OperatorRoster) -> None:
        """Raise ``DownlinkRefused`` unless ``roster`` was issued after the installed one."""
        if roster.issued_at <= installed.issued_at:
            raise DownlinkRefused(
                f"operator roster {roster.version[:12]} is older than the one installed"
            )

    def accepts(self, message: Downlink) -> bool:
        """``check``, a refusal logged (the type and the reason only) as False."""
        return _logged(self.check, message)

    def accepts_newer(self, roster: OperatorRoster, installed: OperatorRoster) -> bool:
        """``check_newer``, a refusal logged as False."""
        return _logged(lambda r: self.check_newer(r, installed), roster)


def _logged(check: Callable[[M], None], message: M) -> bool:
    try:
        check(message)
    except DownlinkRefused as exc:
        log.warning("refused a message from the hub broker: %s; nothing changed", exc.reason)
        return False
    return True
