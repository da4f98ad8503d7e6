"""The kiosk drives the real capture and printing services over a real broker: the form's QR
moves the session on, the photo is auto-captured, checked and accepted, and after submission
the receipts and the photo sheet come out of a real CUPS queue. R1 R3 R5 R29"""

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
from tests.cups import LocalPrinter, pdf_text, placed_images, wait_for_received
from tests.test_kiosk_app import login, make_app, post


@pytest.fixture
def kiosk_with_devices(
    broker: LocalBroker, printing_config: DeviceConfig, operator_hash: str
) -> Iterator[Flask]:
    config = printing_config
    services = [start_service(spec, config) for spec in load_specs(["capture", "printing"])]
    (kiosk_spec,) = load_specs(["kiosk"])
    app = make_app(config, operator_hash)
    attach_service(app, start_service(kiosk_spec, config))
    yield app
    detach_service(app)
    for ctx in services:
        stop_service(ctx)


def wait_live(client: FlaskClient, predicate: str, timeout: float = 40.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = client.get("/live").get_json()
        if eval(predicate, {}, {"live": live}):  # noqa: S307 - test-local expressions only
            return dict(live)
        time.sleep(0.2)
    raise AssertionError(f"live never satisfied {predicate}")


def test_a_whole_session_through_capture_and_printing(
    kiosk_with_devices: Flask, local_printer: LocalPrinter
) -> None:
    app = kiosk_with_devices
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

        post(client, "/options", {"e_certificate": "yes", "braille": "no"})
        post(client, "/statistics", {"municipality": "202029", "sex": "male", "age_band": "70-79"})
        post(client, "/submit", {}, page="/review")
        assert session.step in (Step.PRINT, Step.DONE)
        wait_live(client, "live['step'] == 'done'")

        # R5: two labelled receipt copies; R3: the photo sheet in support mode.
        received = wait_for_received(local_printer, 2)
        texts = [pdf_text(pdf) for pdf in received]
        receipt = next(text for text in texts if "本人控え" in text)
        assert "職員控え" in receipt
        assert any(placed_images(pdf) for pdf in received if "本人控え" not in pdf_text(pdf))

        post(client, "/finish", {}, page="/done")
        post(client, "/next", {}, page="/ended")
        client.get("/")  # where the browser goes next
        assert session.photo is None and session.application_id is None
        assert kiosk(app).camera is not None and kiosk(app).camera.live is None
