"""The tablet's sync service: the outbox and its delivery to the hub (see ``service``).

Its spec is here and names its setup without importing it (reading it loads nothing of sync).
"""

from __future__ import annotations

from fieldkit.registry import ServiceSpec

SERVICE = ServiceSpec(
    name="sync",
    summary="outbox: sealed records delivered to the hub over mutual TLS",
    setup="fieldkit.sync.service:setup",
    roles=frozenset({"tablet"}),
    listens=("antivirus/evt/health", "antivirus/evt/finding"),
)
