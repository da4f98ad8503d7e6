"""The kiosk on a real kit: attached to the bus with capture, printing, sync, wipe and
antivirus running for real, printing on the ``local_printer`` cupsd (see tests/cups.py).

``start_kiosk`` is re-exported from conftest, so any test that runs whole sessions uses the
same wiring; ``wait_live`` waits (with a deadline) for the kiosk's live view to say something.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fieldkit.broker import LocalBroker, free_loopback_port
from fieldkit.kiosk import app as kiosk_app
from fieldkit.kiosk.app import attach_service, detach_service
from fieldkit.pki import KitPki
from fieldkit.registry import load_specs
from fieldkit.runner import ServiceContext, start_service, stop_service
from tests.antivirus_fixtures import fresh_definitions
from tests.cups import LocalPrinter, config_for
from tests.hubkit import enrol_tablet
from tests.support.kiosk import make_app
from tests.support.municipality import MUNICIPALITY_MACHINES
from tests.wipe_fixtures import HOLDER_TIMEOUT, catalogue_dirs, wipe_body

KioskFactory = Callable[..., Flask]


@pytest.fixture
def start_kiosk(
    broker: LocalBroker,
    tmp_path: Path,
    local_printer: LocalPrinter,
    operator_hash: str,
    pki: KitPki,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[KioskFactory]:
    """The kiosk attached to the bus with capture, printing and antivirus running for real.

    The wipe's catalogue lives under ``tmp_path / "dev"`` (see ``catalogue_dirs``), except
    its CUPS spool and cache, which are the real ones of ``local_printer``. ``capture`` is
    an extra config section (e.g. a ``[capture]`` camera source); ``holder_timeout`` how long
    each holder gets to answer (below); ``kiosk`` are kiosk settings.
    """
    started: list[ServiceContext] = []
    apps: list[Flask] = []

    def start(
        definitions_age_hours: float | None = 1.0,
        hub_port: int | None = None,
        camera: bool = True,
        capture: str = "",
        holder_timeout: float | None = None,
        **kiosk: Any,
    ) -> Flask:
        names = ["capture", "printing", "sync", "wipe"] if camera else ["printing", "sync", "wipe"]
        root, tag = catalogue_dirs(tmp_path)
        # The wipe scans the real CUPS spool and cache of this kit's printer, and its own
        # test folders for the rest of the catalogue.
        wipe = (
            wipe_body(root, tag)
            .replace(
                f'cups_spool_dirs = ["{root / "spool-cups"}"]',
                f'cups_spool_dirs = ["{local_printer.spool_dir}"]',
            )
            .replace(
                f'cups_cache_dirs = ["{root / "cache-cups"}"]',
                f'cups_cache_dirs = ["{local_printer.cache_dir}"]',
            )
        )
        # The tablet is enrolled; packets for Matsumoto are sealed to its receiver key.
        MUNICIPALITY_MACHINES.register(pki, "202029")
        tablet = enrol_tablet(pki, "test-tablet-01")
        sync = (
            f'\n[sync]\noutbox = "{tmp_path / "outbox.sqlite"}"\n'
            f'bundle = "{tablet}"\n'
            f"hub_port = {hub_port or free_loopback_port()}\n"
        )
        # How long the holders get: the wipe's wait for each one's forget (HOLDER_TIMEOUT by
        # default, wipe_body) and the kiosk's ping of each before a session starts (half of
        # it; 2 s on a tablet, HOLDER_PING_TIMEOUT). A loaded machine misses 2 s ("holder kiosk
        # did not answer": the wipe fails closed, as it should); a test may give more.
        holder_timeout = holder_timeout or HOLDER_TIMEOUT
        default = f"holder_timeout = {HOLDER_TIMEOUT}"
        assert default in wipe, "wipe_body changed its holder timeout"
        wipe = wipe.replace(default, f"holder_timeout = {holder_timeout}")
        monkeypatch.setattr(kiosk_app, "HOLDER_PING_TIMEOUT", holder_timeout / 2)
        antivirus = ""
        if definitions_age_hours is not None:
            names.append("antivirus")
            antivirus = fresh_definitions(tmp_path, definitions_age_hours)
        # The kiosk's session folder is one the wipe purges and scans.
        kiosk.setdefault("session_dir", root / "run-session")
        config = config_for(tmp_path, local_printer, antivirus + sync + wipe + capture)
        # The kit runs these services: the kiosk's session gate pings exactly these holders.
        runner = config.runner.model_copy(update={"services": [*names, "kiosk"]})
        config = config.model_copy(update={"runner": runner})
        started.extend(start_service(spec, config) for spec in load_specs(names))
        (kiosk_spec,) = load_specs(["kiosk"])
        app = make_app(config, operator_hash, **kiosk)
        attach_service(app, start_service(kiosk_spec, config))
        apps.append(app)
        return app

    yield start
    for app in apps:
        detach_service(app)
    for ctx in started:
        stop_service(ctx)


def wait_live(client: FlaskClient, predicate: str, timeout: float = 40.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = client.get("/live").get_json()
        if eval(predicate, {}, {"live": live}):  # noqa: S307 - test-local expressions only
            return dict(live)
        time.sleep(0.2)
    raise AssertionError(f"live never satisfied {predicate}")
