"""A tablet's device config whose sync service talks to a test hub broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fieldkit.config import DeviceConfig, load_config
from fieldkit.pki import KitPki
from tests.conftest import write_config
from tests.hubkit import tablet_dir


def tablet_config(tmp_path: Path, pki: KitPki, hub_port: int, **sync: Any) -> DeviceConfig:
    """Device ``tab-a``, enrolled in ``pki``, with short retry timings (``sync`` overrides)."""
    values = {
        "outbox": f'"{tmp_path / "outbox.sqlite"}"',
        "bundle": f'"{tablet_dir(pki, "tab-a")}"',
        "hub_port": str(hub_port),
        "ack_timeout": "1.0",
        "backoff_max": "2.0",
        "reconnect_max": "1.0",
    }
    values.update({k: str(v) for k, v in sync.items()})
    body = "\n[sync]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
    path = write_config(tmp_path, body)
    text = path.read_text().replace('id = "test-tablet-01"', 'id = "tab-a"')
    path.write_text(text)
    return load_config(path)
