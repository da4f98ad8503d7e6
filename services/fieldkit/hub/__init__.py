"""The hub: its TLS broker, the ingest service and the database (see the submodules).

The broker's and the ingest's specs are here and name their setups without importing them.
"""

from __future__ import annotations

from fieldkit.registry import ServiceSpec

BROKER = ServiceSpec(
    name="hub-broker",
    summary="hub broker: mosquitto, mutual TLS, CRL, one namespace per device",
    setup="fieldkit.hub.service:setup_broker",
    roles=frozenset({"hub"}),
)

INGEST = ServiceSpec(
    name="hub-ingest",
    summary="hub ingest: verifies device records, stores each once, then acknowledges",
    setup="fieldkit.hub.service:setup_ingest",
    roles=frozenset({"hub"}),
)
