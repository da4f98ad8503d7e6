"""Antivirus that stays current: freshclam from the hub mirror, scans, and a session gate (R10)."""

from __future__ import annotations

from fieldkit.registry import ServiceSpec

SERVICE = ServiceSpec(
    name="antivirus",
    summary="ClamAV definitions from the hub mirror, scans, and the session staleness gate",
    setup="fieldkit.antivirus.service:setup",
    roles=frozenset({"tablet"}),
)

MIRROR_SERVICE = ServiceSpec(
    name="av-mirror",
    summary="hub: serves antivirus definitions to the tablets' freshclam",
    setup="fieldkit.antivirus.mirror:serve_mirror",
    roles=frozenset({"hub"}),
)
