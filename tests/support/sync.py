"""A tablet's device config whose sync service talks to a test hub broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from fieldkit.config import DeviceConfig, load_config
from fieldkit.kiosk.app import attach_service
from fieldkit.kiosk.service import SERVICE as KIOSK
from fieldkit.pki import KitPki
from fieldkit.registry import load_specs
from fieldkit.runner import ServiceContext, start_service
from tests.conftest import write_config
from tests.hubkit import tablet_dir
from tests.support.kiosk import make_app


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


def start_tablet(
    directory: Path, pki: KitPki, hub_port: int, operator_hash: str
) -> tuple[ServiceContext, Flask]:
    """The sync service and the kiosk of device tab-a, on the local broker."""
    config = tablet_config(directory, pki, hub_port)
    (sync_spec,) = load_specs(["sync"])
    sync = start_service(sync_spec, config)
    app = make_app(config, operator_hash)
    attach_service(app, start_service(KIOSK, config))
    return sync, app
