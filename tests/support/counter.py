"""A member of staff at the kiosk in Chromium (Playwright), and the scenes in front of the kit's
image-folder camera: the applicant's form with its QR, the applicant's face."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fieldkit.capture.synthetic import photographed_form
from tests.capture_scenes import applicant_frame, qr_modules
from tests.devkit import OPERATOR, OPERATOR_PASSWORD

TIMEOUT_MS = 60_000


def new_application_id() -> str:
    """A random 23-digit ID with mixed digits (no run a scan could meet by chance)."""
    return "".join(secrets.choice("0123456789") for _ in range(23))


class Staff:
    """The operator at the kiosk in Chromium."""

    def __init__(self, chromium: Any, base: str) -> None:
        self.base = base
        self.context = chromium.new_context(locale="ja-JP")
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.goto(f"{base}/login")
        self.log_in()

    def log_in(self) -> None:
        """On the login page: log in as the demo operator."""
        self.page.get_by_label("職員ID").fill(OPERATOR)
        self.page.get_by_label("パスワード").fill(OPERATOR_PASSWORD)
        self.page.get_by_role("button", name="ログイン").click()
        # Home, or the step of a session still open (a test that failed halfway left it).
        self.page.wait_for_url(lambda url: "/login" not in url, wait_until="commit")

    def wait_for(self, url: str) -> None:
        """Wait for the page; if it never comes, say what the kiosk shows instead."""
        try:
            self.page.wait_for_url(url, timeout=TIMEOUT_MS)
        except Exception as exc:
            text = self.page.inner_text("main") if self.page.query_selector("main") else ""
            raise AssertionError(f"{url} not reached; at {self.page.url}: {text}") from exc

    def session(self, camera: Path, application_id: str, seed: int) -> bytes:
        """One applicant from the form to the printed receipts; returns the accepted photo."""
        self.begin(camera, application_id, seed)
        photo = self.take_photo(camera, seed)
        self.answer_to_review()
        self.submit()
        self.page.wait_for_url("**/done")
        self.finish()
        return photo

    def begin(self, camera: Path, application_id: str, seed: int) -> None:
        """Start a session and show the form's QR: the kiosk moves on to the terms."""
        show_form(camera, application_id, seed)
        self.press_start()
        self.wait_for("**/terms")  # the QR was read

    def press_start(self) -> None:
        self.page.get_by_label("申請サポート").check()
        self.page.get_by_role("button", name="始める").click()

    def take_photo(self, camera: Path, seed: int) -> bytes:
        """The applicant sits down and agrees; the photo is taken and accepted."""
        # Each session its own photo (the scene's noise differs).
        show_camera(camera, applicant_face(seed))
        self.page.get_by_role("button", name="同意する").click()
        self.page.wait_for_url("**/photo", wait_until="commit")
        return self.accept_photo()

    def accept_photo(self) -> bytes:
        self.page.get_by_role("button", name="この写真を使う").wait_for()
        photo = self.page.request.get(f"{self.base}/photo/candidate.jpg").body()
        self.page.get_by_role("button", name="この写真を使う").click()
        self.page.wait_for_url("**/options")
        return photo

    def answer_to_review(self) -> None:
        self.page.get_by_role("group", name="電子証明書を希望する").get_by_label("はい").check()
        self.page.get_by_role("group", name="点字表記を希望する").get_by_label("いいえ").check()
        self.page.get_by_role("button", name="次へ").click()
        self.page.wait_for_url("**/statistics")
        self.page.get_by_label("お住まいの市町村").select_option("202029")
        self.page.get_by_role("button", name="次へ").click()
        self.page.wait_for_url("**/review")

    def submit(self) -> None:
        self.page.get_by_role("button", name="この内容で申請する").click()

    def finish(self) -> None:
        """From the last page to the next applicant: one tap ends the session and wipes it."""
        self.leave_by("受付を終える(データを消去)")

    def next_applicant(self) -> None:
        self.leave_by("次の方へ")

    def leave_by(self, button: str) -> None:
        self.page.get_by_role("button", name=button).click()
        self.page.wait_for_url(f"{self.base}/")
        # Nothing of the applicant stays in the page either.
        self.page.goto("about:blank")
        self.page.goto(f"{self.base}/")


def show_camera(camera: Path, image: np.ndarray) -> None:  # type: ignore[type-arg]
    """Put a new scene in front of the image-folder camera in one step (it rereads the file)."""
    ok, png = cv2.imencode(".png", image)
    assert ok
    staged = camera.with_suffix(".staged")
    staged.write_bytes(png.tobytes())
    os.replace(staged, camera)


def show_form(camera: Path, application_id: str, seed: int) -> None:
    """The applicant's form, its QR holding the online application link with the ID."""
    url = f"https://app.net.kojinbango-card.go.jp/apply?id={application_id}"
    show_camera(camera, photographed_form(qr_modules(url.encode()), "clean", rng(seed)))


def applicant_face(seed: int) -> np.ndarray:  # type: ignore[type-arg]
    face = applicant_frame().astype(np.int16)
    face += rng(seed).integers(-6, 7, size=face.shape, dtype=np.int16)
    return np.clip(face, 0, 255).astype(np.uint8)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
