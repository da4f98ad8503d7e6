"""Test scenes for the capture service, built from real images.

Faces come from the portrait that ships with scikit-image (``skimage.data.astronaut()``);
QR codes are generated with the ``qrcode`` package, an encoder independent of the decoders.
Nothing here is written to disk by default: scenes are arrays made on the fly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import qrcode
from skimage import data

from fieldkit.capture import synthetic
from fieldkit.capture.haar import CHIN_BELOW_BOX, CROWN_ABOVE_BOX
from fieldkit.capture.photo import Guide

Image = npt.NDArray[np.uint8]

# The Haar face box of the astronaut portrait (x, y, w, h), measured once with the same
# cascade: the scenes place this box where the wanted head geometry puts it.
ASTRONAUT_FACE = (177, 66, 95, 95)
FRAME = (1280, 720)
BACKGROUND = (214, 216, 218)  # plain light grey wall, BGR

# Made-up IDs for tests; no real application ID appears anywhere in the repository.
TEST_ID = "12345678901234567890123"
OTHER_ID = "98765432109876543210987"


def qr_modules(
    payload: bytes, error: int = qrcode.constants.ERROR_CORRECT_M
) -> npt.NDArray[np.bool_]:
    code = qrcode.QRCode(border=0, error_correction=error)
    code.add_data(payload)
    code.make(fit=True)
    return np.array(code.get_matrix(), dtype=bool)


def astronaut_bgr() -> Image:
    return np.asarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), dtype=np.uint8)


def _person_mask(shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Soft mask of the astronaut's head and suit, leaving her busy background out."""
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (226, 96), (78, 86), 0, 0, 360, 1.0, -1)
    cv2.ellipse(mask, (240, 420), (230, 250), 0, 180, 360, 1.0, -1)
    mask[:172, :] = np.minimum(
        mask[:172, :],
        (cv2.ellipse(np.zeros(shape, np.float32), (226, 96), (78, 86), 0, 0, 360, 1.0, -1))[
            :172, :
        ],
    )
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), 3.0), dtype=np.float32)


def applicant_frame() -> Image:
    """A 1280x720 frame that passes every photo check, for flows that need the photo taken:
    the drawn demo face at the guide's size (the astronaut smiles with her teeth showing,
    which the mouth rule refuses)."""
    return synthetic.demo_face(FRAME, fit_guide=True)


def astronaut_frame(
    head_mm: float = 34.0,
    margin_mm: float = 4.0,
    offset_mm: float = 0.0,
    *,
    plain_background: bool = True,
    frame: Image | None = None,
) -> Image:
    """A 1280x720 frame with the astronaut placed for the wanted head geometry in the guide."""
    width, height = FRAME
    guide = Guide.for_frame(width, height)
    mm = guide.px_per_mm
    out = frame.copy() if frame is not None else np.empty((height, width, 3), np.uint8)
    if frame is None:
        out[:] = BACKGROUND
        rng = np.random.default_rng(7)
        out[:] = np.clip(
            out.astype(np.int16) + rng.normal(0, 1.5, out.shape[:2])[..., None], 0, 255
        ).astype(np.uint8)
    fx, fy, fw, fh = ASTRONAUT_FACE
    target_h = head_mm * mm / (CROWN_ABOVE_BOX + CHIN_BELOW_BOX)
    scale = target_h / fh
    crown = guide.y + margin_mm * mm
    box_y = crown + CROWN_ABOVE_BOX * target_h
    cx = guide.centre_x + offset_mm * mm
    src = astronaut_bgr()
    matrix = np.array(
        [[scale, 0, cx - (fx + fw / 2) * scale], [0, scale, box_y - fy * scale]], np.float32
    )
    warped = cv2.warpAffine(src, matrix, (width, height), flags=cv2.INTER_LINEAR)
    if plain_background:
        mask = cv2.warpAffine(_person_mask(src.shape[:2]), matrix, (width, height))[..., None]
    else:
        mask = cv2.warpAffine(np.ones(src.shape[:2], np.float32), matrix, (width, height))[
            ..., None
        ]
    return np.asarray(out * (1 - mask) + warped * mask, dtype=np.uint8)


# Real portraits (../shared/data/faces/, MIT; see its README) and their annotations, made by
# hand for these tests (tests/data/faces_annotations.json says how).
FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
ANNOTATIONS = Path(__file__).resolve().parent / "data" / "faces_annotations.json"


@dataclass(frozen=True)
class Annotation:
    name: str
    crown_y: float | None
    chin_y: float | None
    right_eye: tuple[float, float]
    left_eye: tuple[float, float]
    beard: bool

    @property
    def head_px(self) -> float | None:
        if self.crown_y is None or self.chin_y is None:
            return None
        return self.chin_y - self.crown_y


def faces_dir() -> Path:
    """The shared portraits: beside the work trees, or FIELDKIT_FACES when set."""
    return Path(os.environ.get("FIELDKIT_FACES", str(FACES_DIR)))


def annotations() -> list[Annotation]:
    raw = json.loads(ANNOTATIONS.read_text(encoding="utf-8"))["portraits"]
    return [
        Annotation(
            name,
            item["crown_y"],
            item["chin_y"],
            (item["right_eye"][0], item["right_eye"][1]),
            (item["left_eye"][0], item["left_eye"][1]),
            item["beard"],
        )
        for name, item in raw.items()
    ]


def portrait(name: str) -> Image:
    image = cv2.imread(str(faces_dir() / name), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(name)
    return np.asarray(image, np.uint8)


def portrait_frame(
    a: Annotation, head_mm: float = 34.0, margin_mm: float = 4.0, offset_mm: float = 0.0
) -> tuple[Image, float]:
    """A 1280x720 frame with a real portrait scaled and moved so that its annotated head has
    the wanted geometry in the guide; the portrait's own background fills the frame (edges
    replicated). Returns the frame and the scale applied (frame px per portrait px)."""
    assert a.head_px is not None and a.crown_y is not None and a.chin_y is not None
    cx_src = (a.right_eye[0] + a.left_eye[0]) / 2
    return placed(portrait(a.name), (cx_src, a.crown_y, a.chin_y), head_mm, margin_mm, offset_mm)


def placed(
    image: Image,
    head: tuple[float, float, float],
    head_mm: float = 34.0,
    margin_mm: float = 4.0,
    offset_mm: float = 0.0,
) -> tuple[Image, float]:
    """``portrait_frame`` for any photograph whose head (eyes' x, crown row, chin row) is
    known: scaled and moved so that the head has the wanted geometry in the guide."""
    cx_src, crown_y, chin_y = head
    width, height = FRAME
    guide = Guide.for_frame(width, height)
    mm = guide.px_per_mm
    scale = head_mm * mm / (chin_y - crown_y)
    matrix = np.array(
        [
            [scale, 0, guide.centre_x + offset_mm * mm - cx_src * scale],
            [0, scale, guide.y + margin_mm * mm - crown_y * scale],
        ],
        np.float32,
    )
    frame = cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.asarray(frame, np.uint8), scale


# Real photographs of people wearing a hat (tests/data/hats/, licence and source in its README).
HATS_DIR = Path(__file__).resolve().parent / "data" / "hats"
REAL_HATS = ("grace_hopper.jpg",)


def real_hat(name: str) -> Image:
    image = cv2.imread(str(HATS_DIR / name), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(name)
    return np.asarray(image, np.uint8)


def head_crop(a: Annotation, image: Image) -> Image:
    """The head and shoulders of an annotated portrait: a rectangle around the head."""
    assert a.chin_y is not None
    eyes_x = (a.right_eye[0] + a.left_eye[0]) / 2
    eyes_y = (a.right_eye[1] + a.left_eye[1]) / 2
    half = (a.chin_y - eyes_y) * 1.6
    x0, x1 = max(int(eyes_x - half), 0), min(int(eyes_x + half), image.shape[1])
    y0 = max(int(eyes_y - half * 1.3), 0)
    y1 = min(int(a.chin_y + half * 0.5), image.shape[0])
    return np.asarray(image[y0:y1, x0:x1], np.uint8)


# Portraits whose head is turned (yaw measured 10-23 degrees): the turned second person.
TURNED = ("kit_harington-john2.jpeg", "obama2.jpg", "lin-manuel-miranda.png")


def eye_to_chin(a: Annotation) -> float:
    assert a.chin_y is not None
    return a.chin_y - (a.right_eye[1] + a.left_eye[1]) / 2


def with_second_person(
    frame: Image, other: Annotation, face_px: float, where: str, mirrored: bool = False
) -> Image:
    """The frame with a second real person pasted in, their eye-to-chin distance
    ``face_px``: beside the applicant (``side``, right of the guide) or with a third of
    the picture cut by the frame's right edge (``edge``, a carer standing at the side)."""
    crop = head_crop(other, portrait(other.name))
    if mirrored:
        crop = np.asarray(cv2.flip(crop, 1), np.uint8)
    scale = face_px / eye_to_chin(other)
    size = (max(int(crop.shape[1] * scale), 8), max(int(crop.shape[0] * scale), 8))
    crop = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), np.uint8)
    out = frame.copy()
    crop = crop[-FRAME[1] :]
    y0 = FRAME[1] - crop.shape[0]
    if where == "edge":
        x0 = FRAME[0] - int(crop.shape[1] * 0.67)
    else:
        x0 = max(min(int(FRAME[0] * 0.70), FRAME[0] - crop.shape[1]), 0)
    part = crop[:, : FRAME[0] - x0]
    out[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] = part
    return out


# Head coverings composed onto the real portraits (no photograph of a hat is available on
# this machine, docs/capture.md): a shaded, textured shape of a plausible colour fitted to
# the head as the Face Mesh and the person's outline measure it on the portrait without it.
COVERINGS = ("cap", "brimmed", "beanie")
# Fabric colours (BGR): navy, red, khaki, dark grey; "hair" takes the portrait's own hair.
COVERING_COLOURS = {
    "navy": (92, 46, 28),
    "red": (48, 40, 168),
    "khaki": (128, 168, 190),
    "grey": (70, 70, 72),
}


def _fabric(
    shape: tuple[int, int], rng: np.random.Generator, knit: float
) -> npt.NDArray[np.float32]:
    """A relative brightness texture: fine woven noise, or vertical knit ribs with stitches."""
    h, w = shape
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.8)
    texture = 1 + 0.05 * fine
    if knit > 0:
        x = np.arange(w, dtype=np.float32)[None, :]
        y = np.arange(h, dtype=np.float32)[:, None]
        ribs = np.sin(2 * np.pi * x / knit)
        stitches = np.sin(2 * np.pi * (y / (knit * 0.7) + np.abs(np.sin(np.pi * x / knit)) * 0.5))
        texture = texture + 0.10 * ribs + 0.05 * stitches * (ribs > 0)
    return np.asarray(texture, np.float32)


def with_head_covering(
    frame: Image,
    points: npt.NDArray[np.float32],
    crown_y: float,
    kind: str,
    colour: tuple[int, int, int],
    seed: int = 3,
) -> Image:
    """The frame with a head covering over the measured head: ``cap`` (a baseball cap with
    its visor), ``brimmed`` (a hat with a wide brim), ``beanie`` (a knit cap with a cuff),
    or ``headband`` (a band over the hair behind the hairline, the crown's hair left
    visible). Shaded as a dome lit from the upper left, with a soft edge and its shadow on
    the forehead."""
    rng = np.random.default_rng(seed)
    h, w = frame.shape[:2]
    fy = float(points[10, 1])
    d = float(points[152, 1]) - fy
    tx0, tx1 = float(points[127, 0]), float(points[356, 0])
    cx, half = (tx0 + tx1) / 2, (tx1 - tx0) / 2
    shape = np.zeros((h, w), np.float32)  # where the covering is
    shade = np.ones((h, w), np.float32)  # its own shading (1 = lit)
    knit = 0.0
    edge = fy
    if kind == "cap":
        top, edge = crown_y - 0.07 * d, fy + 0.03 * d
        cv2.ellipse(
            shape, (int(cx), int(edge)), (int(half * 1.04), int(edge - top)), 0, 180, 360, 1, -1
        )
        visor = np.zeros((h, w), np.float32)
        cv2.ellipse(visor, (int(cx), int(edge)), (int(half * 1.0), int(0.08 * d)), 0, 0, 360, 1, -1)
        shape = np.maximum(shape, visor)
        shade = np.where(visor > 0, 0.62, 1.0).astype(np.float32)
        for k in (-0.45, 0.0, 0.45):  # panel seams
            cv2.ellipse(
                shade,
                (int(cx), int(edge)),
                (max(int(abs(k) * half), 1), int(edge - top)),
                0,
                180 if k <= 0 else 270,
                270 if k <= 0 else 360,
                0.8,
                2,
            )
    elif kind == "brimmed":
        top, edge = crown_y - 0.16 * d, fy + 0.02 * d
        cv2.rectangle(
            shape,
            (int(cx - half * 0.92), int(top + 0.1 * d)),
            (int(cx + half * 0.92), int(edge)),
            1,
            -1,
        )
        cv2.ellipse(
            shape,
            (int(cx), int(top + 0.1 * d)),
            (int(half * 0.92), int(0.1 * d)),
            0,
            180,
            360,
            1,
            -1,
        )
        band = (int(edge - 0.09 * d), int(edge - 0.02 * d))
        shade[band[0] : band[1]] = 0.55
        brim = np.zeros((h, w), np.float32)
        cv2.ellipse(brim, (int(cx), int(edge)), (int(half * 1.8), int(0.07 * d)), 0, 0, 360, 1, -1)
        shape = np.maximum(shape, brim)
        shade = np.where((brim > 0) & (np.arange(h)[:, None] > edge), 0.6, shade).astype(np.float32)
    elif kind == "beanie":
        top, edge = crown_y - 0.05 * d, fy + 0.08 * d
        cv2.ellipse(
            shape, (int(cx), int(edge)), (int(half * 1.1), int(edge - top)), 0, 180, 360, 1, -1
        )
        cv2.rectangle(
            shape,
            (int(cx - half * 1.1), int(edge - 0.1 * d)),
            (int(cx + half * 1.1), int(edge)),
            1,
            -1,
        )
        cuff = (int(edge - 0.17 * d), int(edge))
        shade[cuff[0] : cuff[1]] *= 0.9
        knit = max(0.03 * d, 3.0)
    elif kind == "headband":
        mid = fy - 0.45 * (fy - crown_y)
        cv2.ellipse(
            shape,
            (int(cx), int(fy + 0.05 * d)),
            (int(half * 1.02), int(fy + 0.05 * d - mid)),
            0,
            180,
            360,
            1,
            max(int(0.05 * d), 2),
        )
        edge = mid
    else:
        raise ValueError(kind)
    # Dome shading: brighter towards the upper left, darker at the rim.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = (xx - cx) / max(half * 1.2, 1), (yy - (edge - 0.2 * d)) / max(0.5 * d, 1)
    dome = np.clip(1.0 - 0.35 * (nx**2 + ny**2) - 0.12 * nx - 0.12 * ny, 0.45, 1.1)
    texture = _fabric((h, w), rng, knit)
    soft = cv2.GaussianBlur(shape, (0, 0), 1.0)[..., None]
    cloth = np.asarray(colour, np.float32)[None, None, :] * (dome * shade * texture)[..., None]
    out = frame.astype(np.float32)
    if kind != "headband":  # the brim's shadow on the forehead
        below = np.zeros((h, w), np.float32)
        cv2.rectangle(
            below, (int(cx - half), int(edge)), (int(cx + half), int(edge + 0.1 * d)), 1, -1
        )
        below = cv2.GaussianBlur(below * (1 - shape), (0, 0), 0.04 * d + 1)
        out *= (1 - 0.35 * below)[..., None]
    out = out * (1 - soft) + cloth * soft
    return np.asarray(np.clip(out, 0, 255), np.uint8)


def hair_colour(
    frame: Image, points: npt.NDArray[np.float32], crown_y: float
) -> tuple[int, int, int]:
    """The portrait's own hair colour (BGR): the median just under the measured crown on
    the face's axis, for a covering as close to the hair as it gets."""
    x, y = int(points[10, 0]), int(crown_y)
    d = float(points[152, 1] - points[10, 1])
    patch = frame[y + int(0.03 * d) : y + int(0.12 * d), x - int(0.08 * d) : x + int(0.08 * d)]
    b, g, r = np.median(patch.reshape(-1, 3), axis=0)
    return int(b), int(g), int(r)


def covered_frames(
    frame: Image, points: npt.NDArray[np.float32], crown_y: float, colours: tuple[str, ...]
) -> list[tuple[str, str, Image]]:
    """Every covering in every named colour (``hair``: the portrait's own) over one head:
    (kind, colour, frame)."""
    out = []
    for kind in COVERINGS:
        for name in colours:
            colour = (
                hair_colour(frame, points, crown_y) if name == "hair" else COVERING_COLOURS[name]
            )
            out.append((kind, name, with_head_covering(frame, points, crown_y, kind, colour)))
    return out
