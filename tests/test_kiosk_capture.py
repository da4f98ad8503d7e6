"""The kiosk drives the real capture service over a real broker: the form's QR moves the
session on, the photo is auto-captured, checked, shown and accepted. R1 R3 R29"""

from __future__ import annotations

import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from fieldkit.broker import LocalBroker
from fieldkit.capture.sources import DEMO_ID
from fieldkit.config import DeviceConfig
from fieldkit.kiosk.app import attach_service, detach_service, kiosk
from fieldkit.kiosk.flow import Step
from fieldkit.registry import load_specs
from fieldkit.runner import start_service, stop_service
from tests.test_kiosk_app import login, make_app, post


@pytest.fixture
def kiosk_with_camera(
    broker: LocalBroker, kit_config: DeviceConfig, operator_hash: str
) -> Iterator[Flask]:
    (capture_spec,) = load_specs(["capture"])
    (kiosk_spec,) = load_specs(["kiosk"])
    capture = start_service(capture_spec, kit_config)
    app = make_app(kit_config, operator_hash)
    attach_service(app, start_service(kiosk_spec, kit_config))
    yield app
    detach_service(app)
    stop_service(capture)


def wait_live(client: FlaskClient, predicate: str, timeout: float = 40.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = client.get("/live").get_json()
        if eval(predicate, {}, {"live": live}):  # noqa: S307 - test-local expressions only
            return dict(live)
        time.sleep(0.2)
    raise AssertionError(f"live never satisfied {predicate}")


def test_scan_then_photo_through_the_capture_service(kiosk_with_camera: Flask) -> None:
    app = kiosk_with_camera
    with app.test_client() as client:
        login(client)
        post(client, "/", {"mode": "support"})
        page = client.get("/scan").get_data(as_text=True)
        assert 'class="preview" src="http://127.0.0.1:' in page  # the MJPEG preview

        # The demo camera shows a form whose QR code holds the all-zero ID.
        wait_live(client, "live['step'] == 'terms'")
        session = kiosk(app).counter.current
        assert session is not None and session.application_id == DEMO_ID

        post(client, "/terms", {"answer": "agree"})
        client.get("/photo")
        wait_live(client, "live['candidate']")
        page = client.get("/photo").get_data(as_text=True)
        assert "この写真を使う" in page
        jpeg = client.get("/photo/candidate.jpg").data
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (1063, 827)  # 45 x 35 mm at 600 dpi

        post(client, "/photo/accept", {}, page="/photo")
        assert session.step is Step.OPTIONS
        assert session.photo is not None and session.online_photo is not None

        post(client, "/abandon", {}, page="/options")
        post(client, "/next", {}, page="/ended")
        client.get("/")  # where the browser goes next
        assert session.photo is None and session.application_id is None
        assert kiosk(app).camera is not None and kiosk(app).camera.live is None
