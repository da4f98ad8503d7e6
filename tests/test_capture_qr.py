"""QR codes photographed on generated forms decode to the right application ID. R1, R9"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fieldkit.capture.qr import FormReader
from fieldkit.capture.synthetic import DEGRADATIONS, Degradation, photographed_form, place_form
from tests.capture_scenes import OTHER_ID, TEST_ID, qr_modules

PER_CATEGORY = 6


@pytest.fixture(scope="module")
def reader() -> FormReader:
    return FormReader()


@pytest.mark.parametrize("category", DEGRADATIONS)
def test_degraded_forms_decode_to_the_right_id(reader: FormReader, category: Degradation) -> None:
    """Perspective, blur, noise, glare, low contrast, small size and JPEG artefacts."""
    rng = np.random.default_rng(100 + DEGRADATIONS.index(category))
    modules = qr_modules(f"https://example.jp/apply/?id={TEST_ID}&lang=ja".encode())
    read = 0
    for _ in range(PER_CATEGORY):
        frame = photographed_form(modules, category, rng)
        reading = reader.read(frame)
        if reading.application_id is not None:
            assert reading.application_id.digits == TEST_ID
            read += 1
        else:
            assert reading.refusal in (None, "unreadable")
    # Every clean, perspective, noise, low-contrast and JPEG frame reads; a glare spot or
    # a blur can wipe a code out for real, so those allow one miss in six.
    assert read >= PER_CATEGORY - (1 if category in ("glare", "blur") else 0)


@pytest.mark.parametrize("encoding", ["utf-8", "cp932"])
def test_japanese_payloads_in_utf8_and_shift_jis_decode(reader: FormReader, encoding: str) -> None:
    payload = f"マイナンバーカード交付申請書 申請書ID:{TEST_ID}".encode(encoding)
    frame = photographed_form(qr_modules(payload), "clean", np.random.default_rng(3))
    reading = reader.read(frame)
    assert reading.application_id is not None
    assert reading.application_id.digits == TEST_ID


def _two_codes(first: bytes, second: bytes) -> np.ndarray:
    rng = np.random.default_rng(5)
    left = photographed_form(qr_modules(first), "clean", rng)
    right = photographed_form(qr_modules(second), "clean", rng)
    return np.hstack([left[:, 640:], right[:, 640:]])


def test_two_different_ids_in_view_are_refused(reader: FormReader) -> None:
    frame = _two_codes(TEST_ID.encode(), OTHER_ID.encode())
    reading = reader.read(frame)
    assert reading.application_id is None
    assert reading.refusal == "several-ids"


def test_a_code_that_is_not_a_form_is_refused_and_a_form_beside_it_wins(
    reader: FormReader,
) -> None:
    alone = reader.read(
        photographed_form(qr_modules(b"https://example.jp/menu"), "clean", np.random.default_rng(1))
    )
    assert alone.application_id is None and alone.refusal == "not-application-form"
    both = reader.read(_two_codes(b"https://example.jp/menu", TEST_ID.encode()))
    assert both.application_id is not None and both.application_id.digits == TEST_ID


def test_a_frame_without_a_code_reads_nothing(reader: FormReader) -> None:
    blank = place_form(
        np.full((1400, 1000), 250, np.uint8), _frame_quad(), np.random.default_rng(2)
    )
    reading = reader.read(cv2.cvtColor(blank, cv2.COLOR_GRAY2BGR))
    assert not reading.found_code and reading.application_id is None and reading.refusal is None


def _frame_quad() -> np.ndarray:
    return np.array([[240, 80], [1040, 80], [1040, 640], [240, 640]], np.float32)
