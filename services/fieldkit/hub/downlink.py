"""The hub's downlink signer: everything hub-ingest sends a tablet (acks, operator rosters) is
signed for that tablet with the hub's downlink key, which the tablet pinned at enrolment
(issue 17 item 3; the wire format is ``fieldkit.sync.wire.Downlink``).

The key lives with ingest's own credentials in the PKI's ``hub/`` folder (0600), not in the
hub web app's reach: the web app neither reads nor offers it. A rotated key
(``fieldkit pki downlink-key --rotate``) is picked up at the next message, without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519

from fieldkit.pki import KitPki, load_ed25519_private
from fieldkit.sync.wire import Downlink

log = logging.getLogger(__name__)

D = TypeVar("D", bound=Downlink)


class DownlinkSigner:
    """Signs downlink messages with the PKI's downlink key, re-read when the file changes."""

    def __init__(self, pki: KitPki) -> None:
        self.pki = pki
        pki.ensure_downlink_key()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._key: ed25519.Ed25519PrivateKey | None = None
        self._current()

    def _current(self) -> ed25519.Ed25519PrivateKey:
        stat = os.stat(self.pki.downlink_key)
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._key is None or stamp != self._stamp:
                self._key = load_ed25519_private(self.pki.downlink_key)
                if self._stamp is not None:
                    log.warning("hub downlink key changed on disk; signing with the new one")
                self._stamp = stamp
            return self._key

    def sign(self, message: D, device_id: str) -> D:
        """``message`` for ``device_id`` only, signed."""
        return message.signed_for(device_id, self._current())
