"""Session wipe, residue scans, erasure records and contract-end sanitization (R6, R12, R24)."""

from __future__ import annotations

from fieldkit.erasure import FORGOTTEN_FILTER
from fieldkit.registry import ServiceSpec

SERVICE = ServiceSpec(
    name="wipe",
    summary="session wipe: forget handshake, purge, residue scan, signed erasure records",
    setup="fieldkit.wipe.service:setup",
    roles=frozenset({"tablet"}),
    listens=(FORGOTTEN_FILTER,),
    # Its erasure records go to the hub through sync's outbox (``submit``).
    requests=("sync",),
)
