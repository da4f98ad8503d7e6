"""The applicant's face photo: detection, checks with measured values, and guidance. R3

The camera frame carries a fixed head guide: a 35 x 45 mm window (``Guide``) that becomes
the photo. Instead of cropping around wherever the face happens to be, the applicant is
guided into the window (closer/back, left/right, up/down), so what the checks measure in
the window is exactly what the print will show, and the operator sees the same frame.

Faces and eyes are found with the Haar cascades that ship with opencv-python-headless 4.x
(no model download). A Haar face box spans roughly brow to chin, so the crown and chin
are estimated from it with ratios calibrated on the scikit-image astronaut portrait
(``CROWN_ABOVE_BOX`` and ``CHIN_BELOW_BOX``); docs/capture.md maps each check to the rule.

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

from fieldkit.capture.messages import PHOTO_HEIGHT_MM, PHOTO_WIDTH_MM, Advice

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


# Head extent relative to the Haar frontal-face box (height h, top y): crown at y - 0.5 h
# (hair included, as the Japanese rule measures 頭頂 to chin), chin at y + 1.1 h.
CROWN_ABOVE_BOX = 0.5
CHIN_BELOW_BOX = 1.1

CheckName = Literal[
    "one-face",
    "eyes-visible",
    "head-height",
    "crown-margin",
    "centred",
    "head-level",
    "sharpness",
    "exposure",
    "clipping",
    "background",
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
    "background": ("後ろを無地の壁にしてください。", "A plain background is needed behind you."),
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
    eyes: list[tuple[float, float]] = field(default_factory=list)
    crown_y: float | None = None
    chin_y: float | None = None
    face_centre: tuple[float, float] | None = None

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


def _range_text(low: float, high: float) -> str:
    return f"{low:g}..{high:g}"


class PhotoAnalyzer:
    """Runs every check on a frame. Cheap enough for 30 frames/s at 1280x720 on one core."""

    # Detection runs on a frame scaled to this width; a head that fits the guide is still
    # well over the cascade's minimum size there.
    DETECT_WIDTH = 256
    REFINE_FACE = 64

    def __init__(self, rules: PhotoRules | None = None, guide_fraction: float = 0.9) -> None:
        self.rules = rules or PhotoRules()
        self.guide_fraction = guide_fraction
        cascades = cv2.data.haarcascades  # type: ignore[attr-defined]
        self._faces = cv2.CascadeClassifier(cascades + "haarcascade_frontalface_default.xml")
        self._eyes = cv2.CascadeClassifier(cascades + "haarcascade_eye.xml")
        if self._faces.empty() or self._eyes.empty():
            raise RuntimeError("the Haar cascades of opencv-python-headless are missing")

    def guide_for(self, frame: Image) -> Guide:
        return Guide.for_frame(frame.shape[1], frame.shape[0], self.guide_fraction)

    def find_faces(self, gray: Image) -> list[Box]:
        """Faces, largest first: a coarse pass on a small frame, then each box refined.

        The coarse pass uses big scale steps (cheap, but the box size jumps by 20 %); the
        refinement re-detects in a small window around each face with 5 % steps, so the
        head height is measured finely enough for a 32-36 mm window.
        """
        scale = self.DETECT_WIDTH / gray.shape[1]
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self._faces.detectMultiScale(
            small, scaleFactor=1.2, minNeighbors=4, minSize=(28, 28)
        )
        boxes: list[Box] = []
        for bx, by, bw, bh in list(found)[:4]:
            coarse = (int(bx / scale), int(by / scale), int(bw / scale), int(bh / scale))
            boxes.append(self._refine(gray, coarse))
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)

    def _refine(self, gray: Image, box: Box) -> Box:
        x, y, w, h = box
        pad = int(w * 0.25)
        x0, y0 = max(x - pad, 0), max(y - pad, 0)
        x1, y1 = min(x + w + pad, gray.shape[1]), min(y + h + pad, gray.shape[0])
        factor = self.REFINE_FACE / w
        roi = cv2.resize(
            gray[y0:y1, x0:x1], None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA
        )
        lo, hi = int(self.REFINE_FACE * 0.78), int(self.REFINE_FACE * 1.3)
        found = self._faces.detectMultiScale(
            roi, scaleFactor=1.05, minNeighbors=3, minSize=(lo, lo), maxSize=(hi, hi)
        )
        if len(found) == 0:
            return box
        centre = ((x - x0) * factor + w * factor / 2, (y - y0) * factor + h * factor / 2)
        fx, fy, fw, fh = min(
            found, key=lambda f: math.dist(centre, (f[0] + f[2] / 2, f[1] + f[3] / 2))
        )
        return (
            round(x0 + fx / factor),
            round(y0 + fy / factor),
            round(fw / factor),
            round(fh / factor),
        )

    def find_eyes(self, gray: Image, face: Box) -> list[tuple[float, float]]:
        """Centres of up to two eyes (frame coordinates), left to right in the image."""
        x, y, w, h = face
        top = gray[max(y, 0) : y + int(h * 0.6), max(x, 0) : x + w]
        if top.size == 0:
            return []
        scale = 120 / w
        roi = cv2.resize(top, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self._eyes.detectMultiScale(
            roi, scaleFactor=1.1, minNeighbors=5, minSize=(14, 14), maxSize=(45, 45)
        )
        centres = sorted(
            ((ex + ew / 2, ey + eh / 2, ew * eh) for ex, ey, ew, eh in found),
            key=lambda e: e[2],
            reverse=True,
        )
        # The largest detection on each half of the face.
        left = [c for c in centres if c[0] < 60]
        right = [c for c in centres if c[0] >= 60]
        return sorted((x + ex / scale, y + ey / scale) for ex, ey, _ in left[:1] + right[:1])

    def analyse(
        self, frame: Image, previous_centre: tuple[float, float] | None = None
    ) -> PhotoAssessment:
        """Every check on one frame, in order of what the applicant should fix first."""
        r = self.rules
        gray = (
            frame
            if frame.ndim == 2
            else np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), np.uint8)
        )
        guide = self.guide_for(frame)
        mm = guide.px_per_mm
        faces = self.find_faces(gray)
        count = PhotoCheck(
            "one-face",
            len(faces) == 1,
            float(len(faces)),
            "= 1",
            "faces",
            "no-face" if not faces else "one-person",
        )
        assessment = PhotoAssessment(checks=[count], faces=faces)
        if not faces:
            return assessment
        face = faces[0]
        x, y, w, h = face
        eyes = self.find_eyes(gray, face)
        assessment.eyes = eyes
        assessment.checks.append(
            PhotoCheck(
                "eyes-visible", len(eyes) == 2, float(len(eyes)), "= 2", "eyes", "face-camera"
            )
        )
        crown = y - CROWN_ABOVE_BOX * h
        chin = y + CHIN_BELOW_BOX * h
        cx, cy = x + w / 2, y + h / 2
        assessment.crown_y, assessment.chin_y, assessment.face_centre = crown, chin, (cx, cy)

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
        if len(eyes) == 2:
            (lx, ly), (rx, ry) = eyes
            roll = math.degrees(math.atan2(ry - ly, rx - lx))
        else:
            roll = float("nan")
        assessment.checks.append(
            PhotoCheck(
                "head-level",
                abs(roll) <= r.roll_deg,
                round(roll, 2),
                f"|x| <= {r.roll_deg:g}",
                "deg",
                "level" if len(eyes) == 2 else "face-camera",
            )
        )

        face_gray = gray[max(y, 0) : y + h, max(x, 0) : x + w]
        face_std = cv2.resize(face_gray, (160, 160), interpolation=cv2.INTER_AREA)
        inner = face_std[24:136, 24:136]
        # Sharpness is measured on the face scaled to a fixed contrast, so a dark but sharp
        # face is judged too dark, not blurred.
        spread = float(face_std.std()) or 1.0
        normalised = (face_std.astype(np.float32) - float(face_std.mean())) * (50.0 / spread)
        lap = float(cv2.Laplacian(normalised, cv2.CV_32F).var())
        mean = float(inner.mean())
        clipped = float(np.count_nonzero((inner >= 250) | (inner <= 5))) / inner.size
        assessment.checks.extend(
            [
                PhotoCheck.in_range(
                    "exposure", mean, r.exposure, 1, "grey level", below="brighter", above="darker"
                ),
                PhotoCheck(
                    "clipping",
                    clipped <= r.clipped_fraction_max,
                    round(clipped, 4),
                    f"<= {r.clipped_fraction_max:g}",
                    "fraction",
                    "glare",
                ),
            ]
        )
        wall = background_spread(gray, guide, face, crown)
        assessment.checks.append(
            PhotoCheck(
                "background",
                wall <= r.background_std_max,
                round(wall, 2),
                f"<= {r.background_std_max:g}",
                "grey levels",
                "background",
            )
        )
        assessment.checks.append(
            PhotoCheck(
                "sharpness",
                lap >= r.sharpness_min,
                round(lap, 1),
                f">= {r.sharpness_min:g}",
                "Laplacian variance",
                "hold-still",
            )
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


def background_spread(gray: Image, guide: Guide, face: Box, crown: float) -> float:
    """Grey-level spread of the background: the guide window above the shoulders, outside
    an ellipse around the head. Patterns, objects and shadows all widen it."""
    x, y, w, h = face
    top = max(guide.y, 0)
    bottom = int(min(y + h * 1.0, guide.y + guide.height))
    window = gray[top:bottom, guide.x : guide.x + guide.width]
    if window.size == 0:
        return 0.0
    # Work at quarter size: the statistic does not need detail, and it keeps the check cheap.
    small = cv2.resize(window, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    mask = np.full(small.shape, 255, np.uint8)
    centre = ((x + w / 2 - guide.x) * 0.25, ((crown + y + h * CHIN_BELOW_BOX) / 2 - top) * 0.25)
    axes = (w * 0.95 * 0.25, (y + h * CHIN_BELOW_BOX - crown) * 0.62 * 0.25)
    cv2.ellipse(
        mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, 0, -1
    )
    values = small[mask > 0]
    if values.size < 50:
        return 0.0
    return float(values.astype(np.float32).std())
