"""The applicant's face photo: detection, checks with measured values, and guidance. R3

The camera frame carries a fixed head guide: a 35 x 45 mm window (``Guide``) that becomes
the photo. Instead of cropping around wherever the face happens to be, the applicant is
guided into the window (closer/back, left/right, up/down), so what the checks measure in
the window is exactly what the print will show, and the operator sees the same frame.

Every face in the frame is found with MediaPipe's full-range face detector and the
applicant's face is measured with the 468-point Face Mesh (``landmarks.py``, model files
from registry packages shipped with fieldkit, nothing downloaded); the chin comes from the
landmarks and the crown from the person's outline by Selfie Segmentation
(``segmentation.py``, ``head.py``). docs/capture.md maps each check to the rule and
compares the models with the Haar cascades used before.

Frames and photos are personal data: this module keeps nothing beyond one call, except the
face position of the previous frame (for the stillness check), which is not an image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from fieldkit.capture import head
from fieldkit.capture.head import HeadOutline
from fieldkit.capture.landmarks import FaceFound, FaceModels, eye_centres
from fieldkit.capture.messages import PHOTO_HEIGHT_MM, PHOTO_WIDTH_MM, Advice
from fieldkit.capture.segmentation import PersonSegmentation

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels

CheckName = Literal[
    "one-face",
    "frontal",
    "eyes-open",
    "mouth-closed",
    "head-covering",
    "head-height",
    "crown-margin",
    "centred",
    "head-level",
    "exposure",
    "light-balance",
    "clipping",
    "glare",
    "background",
    "background-shadow",
    "sharpness",
    "still",
]


# What the applicant hears or reads: Japanese first, plain words; "left/right" are the
# applicant's own (the preview is shown to them as a mirror).
GUIDANCE: dict[Advice, tuple[str, str]] = {
    "no-face": (
        "カメラの方を向いて、枠の中に顔を入れてください。",
        "Look at the camera, face inside the frame.",
    ),
    "one-person": (
        "おひとりだけ写るようにしてください。",
        "Only one person in the picture, please.",
    ),
    "face-camera": ("顔をまっすぐカメラに向けてください。", "Please face the camera directly."),
    "open-eyes": ("目をしっかり開けてください。", "Please open your eyes."),
    "close-mouth": ("口を閉じてください。", "Please close your mouth."),
    "remove-hat": ("帽子などをとってください。", "Please take off your hat."),
    "closer": ("もう少しカメラに近づいてください。", "Please come a little closer."),
    "back": ("少し後ろに下がってください。", "Please move back a little."),
    "lower": ("顔の位置を少し下げてください。", "Please move a little lower."),
    "higher": ("顔の位置を少し上げてください。", "Please move a little higher."),
    "move-left": ("少し左へ動いてください。", "Please move a little to your left."),
    "move-right": ("少し右へ動いてください。", "Please move a little to your right."),
    "level": ("頭を傾けず、まっすぐにしてください。", "Please keep your head level."),
    "brighter": ("暗すぎます。明るくしてください。", "Too dark: more light, please."),
    "darker": ("明るすぎます。光を弱めてください。", "Too bright: less light, please."),
    "glare": (
        "光が強く当たっています。照明やメガネの反射を確認してください。",
        "Glare: check the light and reflections on glasses.",
    ),
    "even-light": (
        "顔の片側が暗くなっています。正面から光が当たるようにしてください。",
        "One side of the face is dark: light the face evenly from the front.",
    ),
    "background": ("後ろを無地の壁にしてください。", "A plain background is needed behind you."),
    "shadow": (
        "後ろの壁に影が出ています。壁から少し離れてください。",
        "Your shadow is on the wall: move a little away from the wall.",
    ),
    "hold-still": ("そのまま動かないでください。", "Please hold still."),
    "ok": ("そのまま動かないでください。撮影します。", "Hold still, taking the photo."),
}


@dataclass(frozen=True)
class PhotoRules:
    """Thresholds of every check (docs/capture.md gives the rule behind each)."""

    head_height_mm: tuple[float, float] = (32.0, 36.0)
    crown_margin_mm: tuple[float, float] = (2.0, 6.0)
    centre_offset_mm: float = 2.0
    roll_deg: float = 5.0
    yaw_deg: float = 8.0
    pitch_deg: float = 8.0
    eye_opening_min: float = 0.12  # lid gap over eye width, the less open eye
    mouth_opening_max: float = 0.07  # inner-lip gap over mouth width
    # Share of the top of the head whose colour is neither the skin nor the hair (head.py):
    # bare heads measured 0.00-0.35 (0.07 at the camera's size), a headband behind the hairline
    # 0.08-0.24, a real photograph of a cap over glasses 0.60-0.99 (bench/capture.py).
    covering_max: float = 0.4
    # Another face counts down to this share of the applicant's face height: the rule is a
    # third; the detector's boxes of two faces of the same size differ by up to 15 %.
    other_face_min_share: float = 0.25
    light_balance_max: float = 0.3  # cheek brightness difference over their mean
    eye_glare_max: float = 0.01  # near-white share around the eyes
    wall_shadow_max: float = 15.0  # grey levels darker beside the head than above it
    # Variance of the Laplacian of the face, resampled to 160 x 160 grey levels.
    sharpness_min: float = 40.0
    exposure: tuple[float, float] = (70.0, 200.0)  # mean grey level of the inner face
    clipped_fraction_max: float = 0.02  # face pixels at >= 250 or <= 5
    background_std_max: float = 12.0  # grey-level spread of the background around the head
    still_mm: float = 1.0  # face centre movement since the previous frame


@dataclass(frozen=True)
class Guide:
    """Where the 35 x 45 mm photo window sits in the camera frame."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def for_frame(cls, width: int, height: int, fraction: float = 0.9) -> Guide:
        h = round(height * fraction)
        w = round(h * PHOTO_WIDTH_MM / PHOTO_HEIGHT_MM)
        return cls(x=(width - w) // 2, y=(height - h) // 2, width=w, height=h)

    @property
    def px_per_mm(self) -> float:
        return self.height / PHOTO_HEIGHT_MM

    @property
    def centre_x(self) -> float:
        return self.x + self.width / 2


@dataclass(frozen=True)
class PhotoCheck:
    """One check on one frame: what was measured, against what, and whether it holds."""

    name: CheckName
    passed: bool
    measured: float
    threshold: str
    unit: str
    advice: Advice | None = None

    @classmethod
    def in_range(
        cls,
        name: CheckName,
        value: float,
        bounds: tuple[float, float],
        digits: int,
        unit: str,
        below: Advice,
        above: Advice,
    ) -> PhotoCheck:
        """``value`` within ``bounds``; the advice names the way out of the side it is on."""
        lo, hi = bounds
        passed = lo <= value <= hi
        return cls(
            name,
            passed,
            round(value, digits),
            _range_text(lo, hi),
            unit,
            below if value < lo else above,
        )


@dataclass
class PhotoAssessment:
    """All checks for one frame, and the single most useful piece of guidance."""

    checks: list[PhotoCheck]
    faces: list[Box] = field(default_factory=list)
    head: Box | None = None  # the applicant's head: cheek to cheek, crown to chin
    eyes: list[tuple[float, float]] = field(default_factory=list)
    crown_y: float | None = None
    chin_y: float | None = None
    face_centre: tuple[float, float] | None = None
    outline: HeadOutline | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def advice(self) -> Advice:
        for check in self.checks:
            if not check.passed and check.advice is not None:
                return check.advice
        return "ok"

    def check(self, name: CheckName) -> PhotoCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


# What each check measured, in words the applicant and the operator read after the advice.
MEASURED_WORDS: dict[CheckName, tuple[str, str]] = {
    "one-face": ("写っている顔の数", "faces in view"),
    "frontal": ("顔の向き(度)", "head turned (degrees)"),
    "eyes-open": ("目の開き", "eye opening"),
    "mouth-closed": ("口の開き", "mouth opening"),
    "head-covering": ("頭の上の髪・肌以外の色の割合", "share of the head top not hair or skin"),
    "head-height": ("頭の大きさ(mm)", "head size (mm)"),
    "crown-margin": ("頭の上の余白(mm)", "space above the head (mm)"),
    "centred": ("中央からのずれ(mm)", "off centre (mm)"),
    "head-level": ("頭の傾き(度)", "head tilt (degrees)"),
    "exposure": ("顔の明るさ", "face brightness"),
    "light-balance": ("顔の左右の明るさの差", "left/right brightness difference"),
    "clipping": ("白とびの割合", "share blown out"),
    "glare": ("目のまわりの反射の割合", "glare around the eyes"),
    "background": ("背景のむら", "background variation"),
    "background-shadow": ("背景の左右の明るさの差", "wall brightness difference"),
    "sharpness": ("鮮明さ", "sharpness"),
    "still": ("動き(mm)", "movement (mm)"),
}


def guidance_words(assessment: PhotoAssessment) -> tuple[str, str]:
    """The advice in Japanese and English, followed by what was measured against what."""
    ja, en = GUIDANCE[assessment.advice]
    for check in assessment.checks:
        if not check.passed:
            what_ja, what_en = MEASURED_WORDS[check.name]
            value = f"{check.measured:g}"
            return (
                f"{ja}（{what_ja}: {value}、基準 {check.threshold}）",
                f"{en} ({what_en}: {value}, limit {check.threshold})",
            )
    return ja, en


def _range_text(low: float, high: float) -> str:
    return f"{low:g}..{high:g}"


class PhotoAnalyzer:
    """Runs every check on a frame: face detection, one landmark pass, one segmentation."""

    def __init__(
        self,
        rules: PhotoRules | None = None,
        guide_fraction: float = 0.9,
        models: FaceModels | None = None,
        segmentation: PersonSegmentation | None = None,
    ) -> None:
        self.rules = rules or PhotoRules()
        self.guide_fraction = guide_fraction
        self.models = models or FaceModels()
        self.segmentation = segmentation or PersonSegmentation()

    def guide_for(self, frame: Image) -> Guide:
        return Guide.for_frame(frame.shape[1], frame.shape[0], self.guide_fraction)

    def find_faces(self, rgb: Image) -> list[FaceFound]:
        """Every face in view down to a share of the largest one's height, largest first.

        Smaller faces are left out so that a face on a poster far behind does not refuse
        the photo; a carer beside the applicant is close to the camera and well above it.
        """
        found = self.models.every_face(rgb)
        if not found:
            return []
        least = found[0].height * self.rules.other_face_min_share
        return [f for f in found if f.height >= least]

    def analyse(
        self,
        frame: Image,
        previous_centre: tuple[float, float] | None = None,
        previous_outline: HeadOutline | None = None,
    ) -> PhotoAssessment:
        """Every check on one frame, in order of what the applicant should fix first.

        ``previous_outline`` (the last frame's ``outline``) lets a still head keep its
        measured crown for a few frames instead of segmenting every frame.
        """
        r = self.rules
        if frame.ndim == 2:
            gray = frame
            bgr = np.asarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), np.uint8)
        else:
            gray = np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), np.uint8)
            bgr = frame
        rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
        guide = self.guide_for(frame)
        mm = guide.px_per_mm
        found = self.find_faces(rgb)
        boxes = [(round(f.x), round(f.y), round(f.width), round(f.height)) for f in found]
        count = PhotoCheck(
            "one-face",
            len(found) == 1,
            float(len(found)),
            "= 1",
            "faces",
            "no-face" if not found else "one-person",
        )
        assessment = PhotoAssessment(checks=[count], faces=boxes)
        if not found:
            return assessment
        points, _ = self.models.mesh(rgb, found[0])
        right_eye, left_eye = eye_centres(points)
        assessment.eyes = sorted([right_eye, left_eye])
        pose = head.pose(points)
        turned = max(abs(pose.yaw) - r.yaw_deg, abs(pose.pitch) - r.pitch_deg)
        assessment.checks.append(
            PhotoCheck(
                "frontal",
                turned <= 0,
                round(max(abs(pose.yaw), abs(pose.pitch)), 1),
                f"|yaw| <= {r.yaw_deg:g}, |pitch| <= {r.pitch_deg:g}",
                "deg",
                "face-camera",
            )
        )
        eyes = head.eye_opening(points)
        assessment.checks.append(
            PhotoCheck(
                "eyes-open",
                eyes >= r.eye_opening_min,
                round(eyes, 3),
                f">= {r.eye_opening_min:g}",
                "lid gap / eye width",
                "open-eyes",
            )
        )
        mouth = head.mouth_opening(points)
        assessment.checks.append(
            PhotoCheck(
                "mouth-closed",
                mouth <= r.mouth_opening_max,
                round(mouth, 3),
                f"<= {r.mouth_opening_max:g}",
                "lip gap / mouth width",
                "close-mouth",
            )
        )
        outline = head.head_outline(rgb, points, self.segmentation, previous_outline)
        assessment.outline = outline
        assessment.checks.append(
            PhotoCheck(
                "head-covering",
                outline.covering <= r.covering_max,
                round(outline.covering, 3),
                f"<= {r.covering_max:g}",
                "share of the head top",
                "remove-hat",
            )
        )
        crown, chin = outline.crown_y, outline.chin_y
        x0, x1 = float(points[:, 0].min()), float(points[:, 0].max())
        cx, cy = (right_eye[0] + left_eye[0]) / 2, (crown + chin) / 2
        assessment.crown_y, assessment.chin_y, assessment.face_centre = crown, chin, (cx, cy)
        # The head box: centred on the eyes, crown to chin (what the wall checks go around).
        face: Box = (round(cx - (x1 - x0) / 2), round(crown), round(x1 - x0), round(chin - crown))
        assessment.head = face

        head_mm = (chin - crown) / mm
        assessment.checks.append(
            PhotoCheck.in_range(
                "head-height", head_mm, r.head_height_mm, 2, "mm", below="closer", above="back"
            )
        )
        margin_mm = (crown - guide.y) / mm
        assessment.checks.append(
            PhotoCheck.in_range(
                "crown-margin", margin_mm, r.crown_margin_mm, 2, "mm", below="lower", above="higher"
            )
        )
        offset_mm = (cx - guide.centre_x) / mm
        # Face right of centre in the camera image: the applicant is to their left, so they
        # move to their right.
        assessment.checks.append(
            PhotoCheck(
                "centred",
                abs(offset_mm) <= r.centre_offset_mm,
                round(offset_mm, 2),
                f"|x| <= {r.centre_offset_mm:g}",
                "mm",
                "move-right" if offset_mm > 0 else "move-left",
            )
        )
        assessment.checks.append(
            PhotoCheck(
                "head-level",
                abs(pose.roll) <= r.roll_deg,
                round(pose.roll, 2),
                f"|x| <= {r.roll_deg:g}",
                "deg",
                "level",
            )
        )

        # The inner face: from the brows to the chin, between the cheek outlines.
        brow = min(right_eye[1], left_eye[1]) - (chin - crown) * 0.08
        fx, fy = round(x0), max(round(brow), 0)
        face_gray = gray[fy : max(round(chin), fy + 1), max(fx, 0) : max(round(x1), fx + 1)]
        if face_gray.size == 0:
            face_gray = np.full((8, 8), 128, np.uint8)
        face_std = cv2.resize(face_gray, (160, 160), interpolation=cv2.INTER_AREA)
        inner = face_std[16:144, 16:144]
        # Sharpness is measured on the face scaled to a fixed contrast, so a dark but sharp
        # face is judged too dark, not blurred.
        spread = float(face_std.std()) or 1.0
        normalised = (face_std.astype(np.float32) - float(face_std.mean())) * (50.0 / spread)
        lap = float(cv2.Laplacian(normalised, cv2.CV_32F).var())
        mean = float(inner.mean())
        clipped = float(np.count_nonzero((inner >= 250) | (inner <= 5))) / inner.size
        balance = head.light_balance(gray, points)
        glare = head.eye_glare(gray, points)
        assessment.checks.extend(
            [
                PhotoCheck.in_range(
                    "exposure", mean, r.exposure, 1, "grey level", below="brighter", above="darker"
                ),
                PhotoCheck(
                    "light-balance",
                    balance <= r.light_balance_max,
                    round(balance, 3),
                    f"<= {r.light_balance_max:g}",
                    "left/right difference",
                    "even-light",
                ),
                PhotoCheck(
                    "clipping",
                    clipped <= r.clipped_fraction_max,
                    round(clipped, 4),
                    f"<= {r.clipped_fraction_max:g}",
                    "fraction",
                    "glare",
                ),
                PhotoCheck(
                    "glare",
                    glare <= r.eye_glare_max,
                    round(glare, 4),
                    f"<= {r.eye_glare_max:g}",
                    "fraction",
                    "glare",
                ),
            ]
        )
        wall = background_spread(gray, guide, face)
        shadow = wall_shadow(gray, guide, face)
        assessment.checks.extend(
            [
                PhotoCheck(
                    "background",
                    wall <= r.background_std_max,
                    round(wall, 2),
                    f"<= {r.background_std_max:g}",
                    "grey levels",
                    "background",
                ),
                PhotoCheck(
                    "background-shadow",
                    shadow <= r.wall_shadow_max,
                    round(shadow, 1),
                    f"<= {r.wall_shadow_max:g}",
                    "grey levels",
                    "shadow",
                ),
                PhotoCheck(
                    "sharpness",
                    lap >= r.sharpness_min,
                    round(lap, 1),
                    f">= {r.sharpness_min:g}",
                    "Laplacian variance",
                    "hold-still",
                ),
            ]
        )
        moved = 0.0
        if previous_centre is not None:
            moved = math.dist(previous_centre, (cx, cy)) / mm
        assessment.checks.append(
            PhotoCheck(
                "still",
                moved <= r.still_mm,
                round(moved, 2),
                f"<= {r.still_mm:g}",
                "mm",
                "hold-still",
            )
        )
        return assessment


def _wall_mask(gray: Image, guide: Guide, face: Box) -> tuple[Image, Image, int]:
    """The guide window from its top down to the chin (quarter size) and a mask that is 255
    on the wall: outside an ellipse around the head, as wide as 1.2 head heights (hair
    included) and as tall as 1.24."""
    x, crown, w, h = face
    top = max(guide.y, 0)
    bottom = int(min(crown + h * 0.94, guide.y + guide.height))
    window = gray[top:bottom, guide.x : guide.x + guide.width]
    if window.size == 0:
        return window, window, top
    # Work at quarter size: the statistic does not need detail, and it keeps the check cheap.
    small = cv2.resize(window, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    mask = np.full(small.shape, 255, np.uint8)
    centre = ((x + w / 2 - guide.x) * 0.25, (crown + h / 2 - top) * 0.25)
    axes = (h * 0.59 * 0.25, h * 0.62 * 0.25)
    cv2.ellipse(
        mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, 0, -1
    )
    return np.asarray(small, np.uint8), mask, top


def background_spread(gray: Image, guide: Guide, face: Box) -> float:
    """Grey-level spread of the background: the guide window above the chin, outside an
    ellipse around the head. Patterns, objects and shadows all widen it."""
    small, mask, _ = _wall_mask(gray, guide, face)
    if small.size == 0:
        return 0.0
    values = small[mask > 0]
    if values.size < 50:
        return 0.0
    return float(values.astype(np.float32).std())


def wall_shadow(gray: Image, guide: Guide, face: Box) -> float:
    """How much darker the wall is on one side of the head than on the other: light from
    one side throws the head's shadow onto the wall on the other side. The median grey of
    the wall (the background check's area) in the window's left and right halves."""
    small, mask, _ = _wall_mask(gray, guide, face)
    if small.size == 0:
        return 0.0
    half = small.shape[1] // 2
    sides = []
    for part, part_mask in ((small[:, :half], mask[:, :half]), (small[:, half:], mask[:, half:])):
        values = part[part_mask > 0]
        if values.size < 10:
            return 0.0
        sides.append(float(np.median(values)))
    return abs(sides[0] - sides[1])
