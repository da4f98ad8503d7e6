"""The kiosk's hash-chained audit trail and `fieldkit audit verify` (R14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fieldkit.audit import verify
from fieldkit.config import DeviceConfig
from fieldkit.kiosk.app import kiosk_audit_path
from tests.conftest import write_config
from tests.support.kiosk import APPLICATION_ID, make_app, post, walk


def verify_cli(config: Path, trail: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldkit", "--config", str(config), "audit", "verify", str(trail)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_a_session_leaves_a_whole_chain_and_an_edited_event_breaks_it(
    kit_config: DeviceConfig, operator_hash: str, tmp_path: Path
) -> None:
    app = make_app(kit_config, operator_hash)
    with app.test_client() as client:
        walk(client, app)
        post(client, "/abandon", {}, page="/review")
        post(client, "/next", {}, page="/ended")
    trail = kiosk_audit_path(kit_config)
    lines = trail.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 8
    assert APPLICATION_ID not in trail.read_text(encoding="utf-8")  # who did what, not whose data
    config = write_config(tmp_path)
    assert verify_cli(config, trail).returncode == 0
    assert verify(trail).ok and verify(trail).entries == len(lines)

    # One event edited in the middle: the chain breaks there, and the command says so.
    entry = json.loads(lines[3])
    entry["event"]["action"] = "terms-agreed:forged"
    lines[3] = json.dumps(entry, ensure_ascii=False, sort_keys=True)
    trail.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = verify_cli(config, trail)
    assert result.returncode == 1
    assert "line 4: the chain is broken" in result.stdout

    # A removed event breaks it too.
    trail.write_text("\n".join(lines[:3] + lines[4:]) + "\n", encoding="utf-8")
    assert not verify(trail).ok
