"""Session wipe, residue scans, erasure records and contract-end sanitization (R6, R12, R24)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fieldkit.erasure import FORGOTTEN_FILTER
from fieldkit.registry import ServiceSpec

if TYPE_CHECKING:
    from fieldkit.runner import ServiceContext


def _setup(ctx: ServiceContext) -> None:
    # Imported here: fieldkit.config imports this package's settings, and the service imports
    # fieldkit.config, so importing the service at package import time would be a cycle.
    from fieldkit.wipe.service import setup

    setup(ctx)


SERVICE = ServiceSpec(
    name="wipe",
    summary="session wipe: forget handshake, purge, residue scan, signed erasure records",
    setup=_setup,
    roles=frozenset({"tablet"}),
    listens=(FORGOTTEN_FILTER,),
    # Its erasure records go to the hub through sync's outbox (``submit``).
    requests=("sync",),
)
