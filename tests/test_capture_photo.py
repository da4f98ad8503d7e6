"""Face photo checks and outputs, on the scikit-image astronaut portrait. R3

The checks on real portraits are in test_capture_real_faces.py."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from fieldkit.capture.export import (
    ONLINE_MAX_BYTES,
    ONLINE_MIN_BYTES,
    crop_to_guide,
    online_jpeg,
    print_master,
)
from fieldkit.capture.messages import PRINT_SIZE, Advice
from fieldkit.capture.photo import CheckName, PhotoAnalyzer, PhotoRules
from tests.capture_scenes import BACKGROUND, astronaut_frame

# The astronaut smiles with her teeth showing, which the mouth rule refuses; these guidance
# tests lift that one limit (the mouth rule is tested on real portraits).
ASTRONAUT_RULES = PhotoRules(mouth_opening_max=1.0)


@pytest.fixture(scope="module")
def analyzer() -> PhotoAnalyzer:
    return PhotoAnalyzer(ASTRONAUT_RULES)


@pytest.fixture(scope="module")
def compliant() -> np.ndarray:
    # The scenes place the astronaut by the old Haar box ratios; placed for 32 mm there,
    # her measured head (crown of the hair to chin) is 34 +- 0.5 mm.
    return astronaut_frame(head_mm=32.0, margin_mm=4.0)


def failed(analyzer: PhotoAnalyzer, frame: np.ndarray) -> set[str]:
    return {c.name for c in analyzer.analyse(frame).checks if not c.passed}


def test_a_compliant_frame_passes_every_check(
    analyzer: PhotoAnalyzer, compliant: np.ndarray
) -> None:
    assessment = analyzer.analyse(compliant)
    assert [c.name for c in assessment.checks if not c.passed] == []
    assert assessment.passed and assessment.advice == "ok"
    assert len(assessment.checks) == 17
    for check in assessment.checks:
        assert check.threshold and check.unit  # each reports what it measured, against what


def _rotated(frame: np.ndarray, degrees: float) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D((640, 330), degrees, 1.0)
    return np.asarray(cv2.warpAffine(frame, matrix, (1280, 720), borderValue=BACKGROUND))


def _glare(frame: np.ndarray) -> np.ndarray:
    spot = frame.copy()
    cv2.circle(spot, (600, 400), 45, (255, 255, 255), -1)
    return spot


def _busy() -> np.ndarray:
    return astronaut_frame(33, plain_background=False)


def _doubled() -> np.ndarray:
    left = astronaut_frame(head_mm=22, margin_mm=10, offset_mm=-11)
    return astronaut_frame(head_mm=22, margin_mm=10, offset_mm=11, frame=left)


CASES: list[tuple[str, object, CheckName, Advice]] = [
    ("scaled down", lambda f: astronaut_frame(head_mm=28), "head-height", "closer"),
    ("scaled up", lambda f: astronaut_frame(head_mm=39, margin_mm=2.5), "head-height", "back"),
    ("shifted up", lambda f: astronaut_frame(head_mm=33, margin_mm=0.0), "crown-margin", "lower"),
    (
        "shifted down",
        lambda f: astronaut_frame(head_mm=33, margin_mm=8.5),
        "crown-margin",
        "higher",
    ),
    ("shifted left", lambda f: astronaut_frame(head_mm=33, offset_mm=-4), "centred", "move-left"),
    ("shifted right", lambda f: astronaut_frame(head_mm=33, offset_mm=4), "centred", "move-right"),
    ("tilted", lambda f: _rotated(f, 12), "head-level", "level"),
    ("darkened", lambda f: (f * 0.3).astype(np.uint8), "exposure", "brighter"),
    ("brightened", lambda f: np.clip(f * 1.35, 0, 255).astype(np.uint8), "exposure", "darker"),
    ("glare spot", _glare, "clipping", "glare"),
    ("blurred", lambda f: cv2.GaussianBlur(f, (0, 0), 3.0), "sharpness", "hold-still"),
    (
        "busy background",
        lambda f: astronaut_frame(33, plain_background=False),
        "background",
        "background",
    ),
    ("doubled", lambda f: _doubled(), "one-face", "one-person"),
    ("no face", lambda f: np.full_like(f, 200), "one-face", "no-face"),
]


@pytest.mark.parametrize(("name", "make", "check", "advice"), CASES, ids=[c[0] for c in CASES])
def test_each_check_fails_for_its_defect(
    analyzer: PhotoAnalyzer,
    compliant: np.ndarray,
    name: str,
    make: object,
    check: CheckName,
    advice: Advice,
) -> None:
    assert callable(make)
    frame = make(compliant)
    assessment = analyzer.analyse(frame)
    assert check in {c.name for c in assessment.checks if not c.passed}, name
    assert not assessment.passed
    assert assessment.check(check).advice == advice
    if check not in ("one-face",):
        # The defect is the reason: the face is still found and measured.
        assert assessment.check("one-face").passed


def test_a_moving_face_fails_the_stillness_check(analyzer: PhotoAnalyzer) -> None:
    first = analyzer.analyse(astronaut_frame(head_mm=33))
    moved = analyzer.analyse(astronaut_frame(head_mm=33, offset_mm=1.8), first.face_centre)
    assert not moved.check("still").passed and moved.check("still").measured > 1.0
    steady = analyzer.analyse(astronaut_frame(head_mm=33), first.face_centre)
    assert steady.check("still").passed


def _jpeg_segments(data: bytes) -> list[int]:
    """Marker bytes of the JPEG's header segments, up to the start of scan."""
    markers, i = [], 2
    while i < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return markers


def test_a_compliant_frame_yields_outputs_that_meet_the_spec(
    analyzer: PhotoAnalyzer, compliant: np.ndarray
) -> None:
    photo = crop_to_guide(compliant, analyzer.guide_for(compliant))
    master, online = print_master(photo), online_jpeg(photo)

    for data in (master, online):
        image = PILImage.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.mode == "RGB"  # not CMYK, not grey
        assert image.size == PRINT_SIZE == (827, 1063)
        assert image.info.get("dpi") == (600, 600)  # 827 px / 600 dpi = 35.0 mm
        assert not image.getexif()
        # No EXIF/XMP (APP1), no comment (COM), no other application segments but JFIF.
        assert set(_jpeg_segments(data)) & {0xE1, 0xE2, 0xED, 0xFE} == set()
    assert ONLINE_MIN_BYTES <= len(online) <= ONLINE_MAX_BYTES
    assert 480 <= PRINT_SIZE[0] <= 6000 and 480 <= PRINT_SIZE[1] <= 6000
    assert (
        abs(PRINT_SIZE[0] / 600 * 25.4 - 35) < 0.05 and abs(PRINT_SIZE[1] / 600 * 25.4 - 45) < 0.05
    )

    # Millimetre geometry, measured again on the print master itself (a frame of its own):
    decoded = cv2.imdecode(np.frombuffer(master, np.uint8), cv2.IMREAD_COLOR)
    whole = PhotoAnalyzer(ASTRONAUT_RULES, guide_fraction=1.0, models=analyzer.models)
    measured = whole.analyse(decoded)
    assert measured.check("one-face").passed
    assert 32 <= measured.check("head-height").measured <= 36
    assert 2 <= measured.check("crown-margin").measured <= 6
    assert abs(measured.check("centred").measured) <= 2
