"""Antivirus that stays current: freshclam from the hub mirror, scans, and a session gate (R10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fieldkit.registry import ServiceSpec

if TYPE_CHECKING:
    from fieldkit.runner import ServiceContext


def _setup(ctx: ServiceContext) -> None:
    # Imported here: fieldkit.config imports this package's settings, and the service imports
    # fieldkit.config, so importing the service at package import time would be a cycle.
    from fieldkit.antivirus.service import setup

    setup(ctx)


SERVICE = ServiceSpec(
    name="antivirus",
    summary="ClamAV definitions from the hub mirror, scans, and the session staleness gate",
    setup=_setup,
    roles=frozenset({"tablet"}),
)
