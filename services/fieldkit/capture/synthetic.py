"""Scenes generated in code: application forms as a camera sees them, and a demo face.

Used by the demo camera source (so ``fieldkit up`` runs without a camera) and by the tests
and the benchmark, which photograph generated forms with controlled degradations:
perspective, blur, noise, glare, low contrast, small size and JPEG artefacts.
The QR encoder is passed in, so tests can use an encoder independent of the decoders.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Modules = npt.NDArray[np.bool_]
Encoder = Callable[[bytes], Modules]

FRAME_SIZE = (1280, 720)  # width, height of a generated camera frame

Degradation = Literal[
    "clean", "perspective", "blur", "noise", "glare", "low-contrast", "small", "jpeg"
]
DEGRADATIONS: tuple[Degradation, ...] = (
    "clean",
    "perspective",
    "blur",
    "noise",
    "glare",
    "low-contrast",
    "small",
    "jpeg",
)


def opencv_qr_modules(payload: bytes) -> Modules:
    """QR modules from OpenCV's encoder (byte mode), one bool per module, True = dark."""
    params = cv2.QRCodeEncoder.Params()
    params.mode = cv2.QRCodeEncoder_MODE_BYTE
    encoder = cv2.QRCodeEncoder.create(params)
    image = encoder.encode(payload.decode("latin-1"))
    # The encoder draws a quiet zone at one pixel per module; cut it to the symbol.
    dark = np.asarray(image < 128)
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    return dark[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def render_form(modules: Modules, module_px: int = 8, seed: int = 0) -> Image:
    """A grey-scale application form: title bars, ruled boxes and the QR code top right."""
    rng = np.random.default_rng(seed)
    height, width = 1400, 1000
    form = np.full((height, width), 250, np.uint8)
    cv2.rectangle(form, (60, 60), (560, 110), 40, -1)  # title band
    for row in range(6):
        y = 420 + row * 140
        cv2.rectangle(form, (60, y), (940, y + 110), 60, 2)
        for _ in range(3):  # printed-looking text strokes
            x = int(rng.integers(80, 400))
            cv2.line(form, (x, y + 30), (x + int(rng.integers(80, 300)), y + 30), 90, 6)
    size = modules.shape[0] * module_px
    qr = cv2.resize(
        np.where(modules, 0, 255).astype(np.uint8),
        (size, size),
        interpolation=cv2.INTER_NEAREST,
    )
    x0, y0 = width - 60 - size, 60
    form[
        y0 - 4 * module_px : y0 + size + 4 * module_px,
        x0 - 4 * module_px : x0 + size + 4 * module_px,
    ] = 255
    form[y0 : y0 + size, x0 : x0 + size] = qr
    return form


def _desk(rng: np.random.Generator) -> Image:
    w, h = FRAME_SIZE
    base = rng.integers(90, 140)
    gradient = np.linspace(-20, 20, w, dtype=np.float32)[None, :]
    desk = np.clip(base + gradient + rng.normal(0, 3, (h, w)), 0, 255)
    return desk.astype(np.uint8)


def place_form(form: Image, quad: npt.NDArray[np.float32], rng: np.random.Generator) -> Image:
    """Warp the form's top part (where the code is) onto ``quad`` in a desk-coloured frame."""
    top = form[:700, :]
    h, w = top.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, quad)
    desk = _desk(rng)
    warped = cv2.warpPerspective(top, matrix, FRAME_SIZE, flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full_like(top, 255), matrix, FRAME_SIZE, flags=cv2.INTER_NEAREST)
    return np.where(mask > 0, warped, desk).astype(np.uint8)


def _quad(
    scale: float, cx: float, cy: float, tilt: float = 0.0, skew: float = 0.0
) -> npt.NDArray[np.float32]:
    w, h = 1000 * scale, 700 * scale
    pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]], np.float32)
    # Perspective: the far edge shrinks (tilt) and one side shortens (skew).
    pts[0, 0] += tilt * w
    pts[1, 0] -= tilt * w
    pts[1, 1] += skew * h
    pts[2, 1] -= skew * h
    angle = math.radians(float(np.clip(skew * 40, -12, 12)))
    rot = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32
    )
    return np.asarray(pts @ rot.T + np.array([cx, cy], np.float32), dtype=np.float32)


def photographed_form(
    modules: Modules, category: Degradation, rng: np.random.Generator, module_px: int = 8
) -> Image:
    """A 1280x720 grey frame of the form with one degradation of random strength."""
    form = render_form(modules, module_px, seed=int(rng.integers(0, 1 << 30)))
    cx, cy = 640 + rng.uniform(-60, 60), 360 + rng.uniform(-40, 40)
    scale = rng.uniform(0.85, 1.0)
    if category == "small":
        # The code shrinks to about 1.6-2.5 px per module.
        scale = rng.uniform(0.22, 0.32)
    if category == "perspective":
        quad = _quad(
            scale * 0.95, cx, cy, tilt=rng.uniform(0.08, 0.2), skew=rng.uniform(-0.18, 0.18)
        )
    else:
        quad = _quad(scale, cx, cy)
    frame: npt.NDArray[np.float32] = place_form(form, quad, rng).astype(np.float32)
    if category == "blur":
        frame = np.asarray(cv2.GaussianBlur(frame, (0, 0), rng.uniform(2.5, 4.2)), np.float32)
    elif category == "noise":
        frame += rng.normal(0, rng.uniform(28, 45), frame.shape)
    elif category == "glare":
        gx, gy = quad[1][0] - rng.uniform(150, 350), quad[1][1] + rng.uniform(100, 250)
        yy, xx = np.mgrid[0 : FRAME_SIZE[1], 0 : FRAME_SIZE[0]]
        radius = rng.uniform(120, 200)
        spot = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * radius**2))
        frame = np.asarray(frame + spot * rng.uniform(180, 260), np.float32)
    elif category == "low-contrast":
        mid = rng.uniform(90, 160)
        frame = np.asarray(mid + (frame - frame.mean()) * rng.uniform(0.07, 0.12), np.float32)
        frame += rng.normal(0, 1.5, frame.shape)
    frame8 = np.clip(frame, 0, 255).astype(np.uint8)
    if category == "jpeg":
        frame8 = np.asarray(cv2.GaussianBlur(frame8, (0, 0), 1.2), np.uint8)
        ok, data = cv2.imencode(
            ".jpg", frame8, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(4, 10))]
        )
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        frame8 = np.asarray(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), dtype=np.uint8)
    return frame8


def demo_face(
    size: tuple[int, int] = FRAME_SIZE,
    offset: tuple[int, int] = (0, 0),
    *,
    fit_guide: bool = False,
) -> Image:
    """A drawn head and shoulders on a plain background, for the demo source (BGR).

    ``fit_guide`` draws the head at the size the photo checks accept (hair top to chin,
    2.22 fh, is 34 mm in the 90 % guide, crown 4 mm below its top); without it the head is
    smaller (about 25 mm), as first drawn.
    """
    w, h = size
    frame = np.full((h, w, 3), (222, 220, 218), np.uint8)
    centre, width, height = (0.503, 0.226, 0.306) if fit_guide else (0.545, 0.17, 0.23)
    cx, cy = w // 2 + offset[0], int(h * centre) + offset[1]
    fw, fh = int(h * width), int(h * height)
    cv2.ellipse(
        frame,
        (cx, cy + int(fh * 2.3)),
        (int(fw * 2.4), int(fh * 1.4)),
        0,
        180,
        360,
        (80, 60, 50),
        -1,
    )
    cv2.rectangle(
        frame, (cx - fw // 3, cy + fh - 10), (cx + fw // 3, cy + int(fh * 1.3)), (120, 150, 190), -1
    )
    cv2.ellipse(
        frame, (cx, cy - fh // 6), (int(fw * 1.12), int(fh * 1.05)), 0, 0, 360, (30, 30, 40), -1
    )
    cv2.ellipse(frame, (cx, cy), (fw, fh), 0, 0, 360, (130, 160, 205), -1)
    cv2.ellipse(
        frame,
        (cx, cy - int(fh * 0.75)),
        (int(fw * 1.02), int(fh * 0.45)),
        0,
        180,
        360,
        (30, 30, 40),
        -1,
    )
    eye_y, eye_dx = cy - fh // 6, int(fw * 0.42)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        cv2.ellipse(
            frame,
            (ex, eye_y - int(fh * 0.16)),
            (int(fw * 0.26), int(fh * 0.04)),
            0,
            0,
            360,
            (40, 40, 50),
            -1,
        )
        # A shaded eye socket: the darker band the eye cascade looks for.
        cv2.ellipse(
            frame, (ex, eye_y), (int(fw * 0.3), int(fh * 0.12)), 0, 0, 360, (95, 115, 150), -1
        )
        cv2.ellipse(
            frame, (ex, eye_y), (int(fw * 0.2), int(fh * 0.07)), 0, 0, 360, (245, 245, 245), -1
        )
        cv2.circle(frame, (ex, eye_y), int(fh * 0.065), (40, 30, 30), -1)
    cv2.line(frame, (cx, eye_y + 10), (cx - 8, cy + fh // 3), (100, 125, 170), 5)
    cv2.ellipse(
        frame,
        (cx, cy + int(fh * 0.55)),
        (int(fw * 0.35), int(fh * 0.06)),
        0,
        0,
        360,
        (70, 70, 140),
        -1,
    )
    return np.asarray(cv2.GaussianBlur(frame, (0, 0), 2.0), dtype=np.uint8)
