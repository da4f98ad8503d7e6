"""Fresh antivirus definitions for tests whose kiosk must pass the session gate (R10)."""

from __future__ import annotations

import time
from pathlib import Path

from fieldkit.antivirus.database import build_unsigned_database, hex_signature
from fieldkit.antivirus.mirror import publish_database

# The kit's test signature: a marker no real file holds.
MARKER = b"FIELDKIT-AV-TEST-MARKER-7f3a9c41d2"
SIGNATURE = "Fieldkit.Test.Marker-1"
HOUR = 3600.0


def kit_database(*, version: int, age_hours: float = 0.0) -> bytes:
    """The kit's signature database, built ``age_hours`` ago."""
    ndb = (hex_signature(SIGNATURE, MARKER) + "\n").encode()
    return build_unsigned_database(
        "fieldkit", {"fieldkit.ndb": ndb}, version=version, built_at=time.time() - age_hours * HOUR
    )


def fresh_definitions(tmp_path: Path, age_hours: float = 1.0) -> str:
    """Publish a kit database built ``age_hours`` ago; return the [antivirus] config section."""
    database_dir = tmp_path / "clamav"
    database_dir.mkdir(exist_ok=True)
    publish_database(database_dir, "fieldkit.cud", kit_database(version=1, age_hours=age_hours))
    return f"""
[antivirus]
official_databases = []
custom_databases = ["fieldkit.cud"]
max_definitions_age_hours = 48
database_dir = "{database_dir}"
state_dir = "{tmp_path / "av-state"}"
update_on_start = false
"""
