"""Fresh antivirus definitions for tests whose kiosk must pass the session gate (R10)."""

from __future__ import annotations

from pathlib import Path

from fieldkit.antivirus.mirror import publish_database
from tests.test_antivirus import kit_database


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
