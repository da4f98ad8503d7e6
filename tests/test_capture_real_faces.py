"""The photo checks on real portraits (../shared/data/faces/, MIT), annotated by hand. R3

Each rule is shown both ways on real photographs where the set has both: a portrait that
meets it and one that does not, or the same portrait with one defect added (a second
person, a shadow on the wall, a reflection on the eyes, one side of the face darkened).
bench/capture.py gives the rates over the whole set.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import cv2
import numpy as np
import pytest

from fieldkit.capture.grabcut import crown_by_grabcut
from fieldkit.capture.haar import HaarHeadEstimate
from fieldkit.capture.head import covering_share, crown_window, head_outline
from fieldkit.capture.photo import Guide, PhotoAnalyzer, guidance_words
from tests.capture_scenes import (
    REAL_HATS,
    TURNED,
    Annotation,
    annotations,
    covered_frames,
    eye_to_chin,
    faces_dir,
    placed,
    portrait,
    portrait_frame,
    real_hat,
    with_head_covering,
    with_second_person,
)

pytestmark = pytest.mark.skipif(
    not faces_dir().is_dir(), reason="the shared portraits are not beside the work tree"
)

ALL = annotations() if faces_dir().is_dir() else []
WHOLE_HEAD = [a for a in ALL if a.head_px is not None]
BY_NAME = {a.name: a for a in ALL}


@pytest.fixture(scope="module")
def analyzer() -> PhotoAnalyzer:
    return PhotoAnalyzer()


def frame_of(name: str) -> np.ndarray:
    return portrait_frame(BY_NAME[name])[0]


def person(a: Annotation) -> str:
    return a.name.replace("_", "-").split("-")[0]


def test_the_annotations_cover_the_set() -> None:
    names = {p.name for p in faces_dir().iterdir() if p.suffix in (".png", ".jpg", ".jpeg")}
    assert names == set(BY_NAME)
    assert len(WHOLE_HEAD) == 10  # three have the crown or the chin out of sight


def test_the_head_is_measured_closer_than_the_box_ratio_estimate(
    analyzer: PhotoAnalyzer,
) -> None:
    """Each portrait placed at 34 mm: the measured head height beside the Haar estimate."""
    haar = HaarHeadEstimate()
    measured, estimated = [], []
    for a in WHOLE_HEAD:
        frame, _ = portrait_frame(a, head_mm=34.0)
        assessment = analyzer.analyse(frame)
        measured.append(abs(assessment.check("head-height").measured - 34.0))
        boxes = haar.find_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        if boxes:
            crown, chin = haar.crown_and_chin(boxes[0])
            estimated.append(abs((chin - crown) / analyzer.guide_for(frame).px_per_mm - 34.0))
        else:
            estimated.append(float("inf"))
    assert statistics.median(measured) <= 1.0
    assert statistics.median(measured) < statistics.median(estimated)
    # bench/capture.py reports the share within 1 mm on more placements (the target is 90 %).
    assert sum(m <= 1.0 for m in measured) >= 0.9 * len(measured)
    assert max(measured) <= 1.5


# Busy or dark backgrounds behind dark hair, and hair running to the photograph's top edge:
# where GrabCut lost the outline (docs/capture.md).
BUSY = ("obama2.jpg", "kit_harington-john1.jpeg", "rose_leslie-img2.jpg", "alex-lacamoire.png")


def test_the_crown_is_measured_on_busy_backgrounds(analyzer: PhotoAnalyzer) -> None:
    """The person's outline gives the crown within 1 mm where GrabCut missed it by more."""
    missed_before = 0
    for name in BUSY:
        frame, _ = portrait_frame(BY_NAME[name], head_mm=34.0, margin_mm=4.0)
        guide = Guide.for_frame(frame.shape[1], frame.shape[0])
        true_crown = guide.y + 4.0 * guide.px_per_mm
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        points, _ = analyzer.models.mesh(rgb, analyzer.find_faces(rgb)[0])
        outline = head_outline(rgb, points, analyzer.segmentation)
        assert outline.crown_measured, name
        assert abs(outline.crown_y - true_crown) / guide.px_per_mm <= 1.0, name
        before, _ = crown_by_grabcut(frame, points)
        missed_before += abs(before - true_crown) / guide.px_per_mm > 1.0
    assert missed_before >= 3  # the test would catch a return to the old method


def test_hair_cut_by_the_frame_s_top_is_not_taken_for_the_crown(analyzer: PhotoAnalyzer) -> None:
    """With the crown above the frame, the outline ends at the edge: the crown is not
    measured there but estimated, and the photo fails its margin (move lower)."""
    a = BY_NAME["biden-biden2.jpg"]
    frame, _ = portrait_frame(a, head_mm=34.0, margin_mm=-4.0)
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    points, _ = analyzer.models.mesh(rgb, analyzer.find_faces(rgb)[0])
    assert not head_outline(rgb, points, analyzer.segmentation).crown_measured
    check = analyzer.analyse(frame).check("crown-margin")
    assert not check.passed and check.advice == "lower"


@pytest.mark.parametrize("a", WHOLE_HEAD, ids=[a.name for a in WHOLE_HEAD])
def test_one_real_person_counts_as_one_face(analyzer: PhotoAnalyzer, a: Annotation) -> None:
    frame, _ = portrait_frame(a)
    assert analyzer.analyse(frame).check("one-face").measured == 1


COMPOSED = [
    (applicant, other, where)
    for applicant in ("obama-720p.jpg", "biden-biden2.jpg", "rose_leslie-img2.jpg")
    for other in ("kit_harington-john2.jpeg", "obama2.jpg", "alex-lacamoire.png")
    for where in ("side", "edge")
    if applicant[:5] != other[:5]
]


@pytest.mark.parametrize(
    ("applicant", "other", "where"), COMPOSED, ids=["-".join(c) for c in COMPOSED]
)
def test_a_second_person_in_view_refuses_the_photo(
    analyzer: PhotoAnalyzer, applicant: str, other: str, where: str
) -> None:
    """A carer beside the applicant or cut by the frame's edge, eye to chin 0.4 of the
    applicant's (kit_harington-john2 and obama2 have their head turned); refused."""
    a = BY_NAME[applicant]
    frame, scale = portrait_frame(a)
    composed = with_second_person(frame, BY_NAME[other], eye_to_chin(a) * scale * 0.4, where)
    assessment = analyzer.analyse(composed)
    assert assessment.check("one-face").measured >= 2
    assert assessment.advice == "one-person"
    assert frame is not composed and analyzer.analyse(frame).check("one-face").passed


def test_a_turned_head_fails_the_frontal_check(analyzer: PhotoAnalyzer) -> None:
    for name in ("obama-720p.jpg", "rose_leslie-img2.jpg", "kit_harington-john1.jpeg"):
        assert analyzer.analyse(frame_of(name)).check("frontal").passed, name
    for name in TURNED:  # yaw 10-24 degrees
        check = analyzer.analyse(portrait(name)).check("frontal")
        assert not check.passed and check.advice == "face-camera", name


def test_an_open_mouth_fails_and_a_closed_one_passes(analyzer: PhotoAnalyzer) -> None:
    for name in ("biden.jpg", "kit_harington-john1.jpeg", "rose_leslie-img2.jpg"):
        assert analyzer.analyse(frame_of(name)).check("mouth-closed").passed, name
    for name in ("obama-720p.jpg", "obama2.jpg", "biden-biden2.jpg"):  # smiling, speaking
        check = analyzer.analyse(frame_of(name)).check("mouth-closed")
        assert not check.passed and check.advice == "close-mouth", name


def test_open_eyes_pass_on_every_portrait(analyzer: PhotoAnalyzer) -> None:
    """The set has no closed eyes: only the passing side is shown on real faces."""
    for a in WHOLE_HEAD:
        assert analyzer.analyse(portrait_frame(a)[0]).check("eyes-open").passed, a.name


def test_a_tilted_head_fails_the_level_check(analyzer: PhotoAnalyzer) -> None:
    assert analyzer.analyse(frame_of("obama.jpg")).check("head-level").passed
    check = analyzer.analyse(frame_of("biden.jpg")).check("head-level")  # tilted 12 degrees
    assert not check.passed and check.advice == "level"


def _darken_half(frame: np.ndarray, x: int) -> np.ndarray:
    out = frame.astype(np.float32)
    out[:, :x] *= 0.45
    return np.asarray(out, np.uint8)


def test_light_from_one_side_fails_the_balance_check(analyzer: PhotoAnalyzer) -> None:
    frame = frame_of("obama-720p.jpg")
    even = analyzer.analyse(frame)
    assert even.check("light-balance").passed
    assert even.face_centre is not None
    one_sided = analyzer.analyse(_darken_half(frame, int(even.face_centre[0])))
    check = one_sided.check("light-balance")
    assert not check.passed and check.advice == "even-light"
    # A portrait lit from its side in the original photograph fails as well.
    assert not analyzer.analyse(frame_of("alex-lacamoire.png")).check("light-balance").passed


def test_a_reflection_on_the_eyes_fails_the_glare_check(analyzer: PhotoAnalyzer) -> None:
    frame = frame_of("obama.jpg")
    clear = analyzer.analyse(frame)
    assert clear.check("glare").passed and len(clear.eyes) == 2
    (x, y), _ = clear.eyes
    glasses = frame.copy()
    cv2.ellipse(glasses, (int(x) + 6, int(y) - 4), (22, 9), 20, 0, 360, (255, 255, 255), -1)
    check = analyzer.analyse(glasses).check("glare")
    assert not check.passed and check.advice == "glare"


def test_a_busy_background_fails_and_a_plain_one_passes(analyzer: PhotoAnalyzer) -> None:
    assert analyzer.analyse(frame_of("alex_lacamoire-img1.jpg")).check("background").passed
    for name in ("obama-720p.jpg", "biden-biden2.jpg", "rose_leslie-img2.jpg"):
        check = analyzer.analyse(frame_of(name)).check("background")
        assert not check.passed and check.advice == "background", name


def test_the_head_s_shadow_on_the_wall_fails(analyzer: PhotoAnalyzer) -> None:
    frame = frame_of("alex_lacamoire-img1.jpg")  # a white wall behind him
    plain = analyzer.analyse(frame)
    assert plain.check("background-shadow").passed and plain.head is not None
    x, crown, w, h = plain.head
    shade = np.zeros(frame.shape[:2], np.float32)
    cv2.ellipse(
        shade, (x + w // 2 + w // 2, crown + h // 2), (w // 2 + 60, h // 2 + 40), 0, 0, 360, 1, -1
    )
    shade = cv2.GaussianBlur(shade, (0, 0), 12)[..., None]
    shadowed = np.asarray(frame * (1 - 0.4 * shade), np.uint8)
    # The person stays as they were: only the wall behind them darkens.
    shadowed[crown : crown + h, x : x + w] = frame[crown : crown + h, x : x + w]
    check = analyzer.analyse(shadowed).check("background-shadow")
    assert not check.passed and check.advice == "shadow"


def test_the_guidance_says_what_was_measured_japanese_first(analyzer: PhotoAnalyzer) -> None:
    a = BY_NAME["obama-720p.jpg"]
    frame, scale = portrait_frame(a)
    other = BY_NAME["alex-lacamoire.png"]
    two = with_second_person(frame, other, eye_to_chin(a) * scale * 0.6, "side")
    ja, en = guidance_words(analyzer.analyse(two))
    assert ja.startswith("おひとりだけ写るようにしてください。") and "写っている顔の数: 2" in ja
    assert en.startswith("Only one person") and "faces in view: 2" in en
    far, _ = portrait_frame(BY_NAME["kit_harington-john1.jpeg"], head_mm=28.0)
    ja, _ = guidance_words(analyzer.analyse(far))
    assert ja.startswith("もう少しカメラに近づいてください。") and "頭の大きさ(mm): 2" in ja


def test_a_still_head_keeps_its_crown_and_a_new_one_is_segmented(analyzer: PhotoAnalyzer) -> None:
    """The live loop passes the last outline: a still head keeps its measured crown for at
    most three frames (one segmentation in any five, the auto-capture run); another head in
    the same place is segmented afresh."""
    frame = frame_of("obama2.jpg")
    first = analyzer.analyse(frame)
    assert first.outline is not None and first.outline.reused == 0
    outline, reused = first.outline, []
    for _ in range(5):
        assessment = analyzer.analyse(frame, first.face_centre, outline)
        assert assessment.outline is not None
        outline = assessment.outline
        reused.append(outline.reused)
        assert abs(outline.crown_y - first.outline.crown_y) < 0.01
    assert reused == [1, 2, 3, 0, 1]
    other = analyzer.analyse(frame_of("rose_leslie-img2.jpg"), first.face_centre, first.outline)
    assert other.outline is not None and other.outline.reused == 0


# Head coverings. No photograph of a hat is on this machine: the hats are composed onto the
# real portraits (tests/capture_scenes.py::with_head_covering; docs/capture.md says how and
# what that leaves untested). Placements as in bench/capture.py: head 34, 32, 36, 33 mm.
PLACEMENTS = ((34.0, 4.0, 0.0), (32.0, 2.0, -3.0), (36.0, 6.0, 3.0), (33.0, 3.0, 2.0))


def test_a_bare_head_passes_the_covering_check(analyzer: PhotoAnalyzer) -> None:
    """No false refusal: every portrait as photographed (the three with the crown or the
    chin out of sight too) and the ten whole heads at four placements each."""
    for a in ALL:
        check = analyzer.analyse(portrait(a.name)).check("head-covering")
        assert check.passed, (a.name, check.measured)
    for a in WHOLE_HEAD:
        for head_mm, margin, offset in PLACEMENTS:
            frame, _ = portrait_frame(a, head_mm=head_mm, margin_mm=margin, offset_mm=offset)
            check = analyzer.analyse(frame).check("head-covering")
            assert check.passed, (a.name, head_mm, check.measured)


def _head(analyzer: PhotoAnalyzer, frame: np.ndarray) -> tuple[np.ndarray, float]:
    """The landmarks and the measured crown of the bare head, to fit a covering to."""
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    points, _ = analyzer.models.mesh(rgb, analyzer.find_faces(rgb)[0])
    return points, head_outline(rgb, points, analyzer.segmentation).crown_y


def _covered(analyzer: PhotoAnalyzer, a: Annotation, colours: tuple[str, ...]) -> list:
    frame, _ = portrait_frame(a)
    points, crown = _head(analyzer, frame)
    return [
        (f"{a.name} {kind} {colour}", covered, points, crown)
        for kind, colour, covered in covered_frames(frame, points, crown, colours)
    ]


def _refused(analyzer: PhotoAnalyzer, frames: list) -> list[str]:
    """The compositions the covering check refuses (with the applicant still seen alone)."""
    out = []
    for name, frame, _, _ in frames:
        assessment = analyzer.analyse(frame)
        assert assessment.check("one-face").measured == 1, name
        check = assessment.check("head-covering")
        if not check.passed and check.advice == "remove-hat":
            out.append(name)
    return out


def test_a_hat_refuses_the_photo(analyzer: PhotoAnalyzer) -> None:
    """A cap, a brimmed hat and a knit beanie, each in navy and in red, on every whole head
    (60 compositions): every one refused, with the advice to take it off. With the check
    switched off (the limit at 1, nothing can exceed it) the same frames all pass, so this
    test fails when the check stops judging."""
    frames = [f for a in WHOLE_HEAD for f in _covered(analyzer, a, ("navy", "red"))]
    assert len(frames) == 60
    assert _refused(analyzer, frames) == [name for name, *_ in frames]
    off = PhotoAnalyzer(
        replace(analyzer.rules, covering_max=1.0),
        models=analyzer.models,
        segmentation=analyzer.segmentation,
    )
    assert _refused(off, frames) == []


def test_the_hat_advice_comes_first_japanese_first(analyzer: PhotoAnalyzer) -> None:
    """A frame that meets every other rule: the advice is to take the hat off, before the
    head size (which the hat's top would falsify)."""
    a = BY_NAME["kit_harington-john1.jpeg"]
    (name, frame, _, _), *_ = _covered(analyzer, a, ("red",))
    assessment = analyzer.analyse(frame)
    assert assessment.advice == "remove-hat", name
    ja, en = guidance_words(assessment)
    assert ja.startswith("帽子などをとってください。") and en.startswith("Please take off your hat")


def test_a_headband_behind_the_hairline_passes(analyzer: PhotoAnalyzer) -> None:
    """A band over the hair that leaves the crown's hair in view does not cover the head:
    navy and red, on every whole head."""
    for a in WHOLE_HEAD:
        frame, _ = portrait_frame(a)
        points, crown = _head(analyzer, frame)
        for colour in ((92, 46, 28), (48, 40, 168)):
            banded = with_head_covering(frame, points, crown, "headband", colour)
            check = analyzer.analyse(banded).check("head-covering")
            assert check.passed, (a.name, colour, check.measured)


def _hat_placements(analyzer: PhotoAnalyzer, image: np.ndarray) -> list[np.ndarray]:
    """A photograph as taken and placed in a 1280 x 720 frame at the four placements, its
    head (eyes, crown, chin) as the checks measure it on the photograph."""
    found = analyzer.analyse(image)
    assert found.crown_y is not None and found.chin_y is not None and found.face_centre
    head = (found.face_centre[0], found.crown_y, found.chin_y)
    return [image] + [placed(image, head, h, m, o)[0] for h, m, o in PLACEMENTS]


@pytest.mark.parametrize("name", REAL_HATS)
def test_a_real_photograph_of_a_hat_over_glasses_is_refused(
    analyzer: PhotoAnalyzer, name: str
) -> None:
    """A real photograph (tests/data/hats/, public domain): a dark cap with a white top over
    glasses, as taken and at four placements, is refused with the advice to take it off.
    With the brows read whole (the reference before), the glasses' dark frames make the
    cap's band a familiar colour and the same frames mostly pass (3 of 5: 0.21-0.33 against
    the limit 0.4): the test fails on a return to it."""
    passed_before = 0
    for frame in _hat_placements(analyzer, real_hat(name)):
        assessment = analyzer.analyse(frame)
        assert assessment.check("one-face").measured == 1
        check = assessment.check("head-covering")
        assert not check.passed and check.advice == "remove-hat", check.measured
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        points, _ = analyzer.models.mesh(rgb, analyzer.find_faces(rgb)[0])
        window = crown_window(points)
        mask, seen = analyzer.segmentation.window(rgb, *window)
        assert covering_share(seen, mask, window, points) == pytest.approx(check.measured, 1e-3)
        before = covering_share(seen, mask, window, points, whole_brows=True)
        passed_before += before <= analyzer.rules.covering_max
    assert passed_before >= 3


def test_bare_heads_with_drawn_glasses_pass(analyzer: PhotoAnalyzer) -> None:
    """No false refusal from glasses: dark frames drawn over every whole head's eyes, the
    brows' lower edge included, leave the bare head passing."""
    for a in WHOLE_HEAD:
        frame, _ = portrait_frame(a)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        points, _ = analyzer.models.mesh(rgb, analyzer.find_faces(rgb)[0])
        glasses = frame.copy()
        for ring in ((33, 133, 159, 145), (263, 362, 386, 374)):
            (x0, y0), (x1, y1) = points[list(ring), :2].min(0), points[list(ring), :2].max(0)
            w, h = x1 - x0, y1 - y0
            box = (int(x0 - 0.35 * w), int(y0 - 1.6 * h), int(x1 + 0.35 * w), int(y1 + 1.4 * h))
            cv2.rectangle(glasses, box[:2], box[2:], (40, 30, 30), max(int(0.12 * w), 3))
        check = analyzer.analyse(glasses).check("head-covering")
        assert check.passed, (a.name, check.measured)
