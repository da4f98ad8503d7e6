"""Measurements of one head from its Face Mesh landmarks and the frame around it. R3

Every function takes the frame and the 468 landmarks (frame pixels) and returns a number
that a check compares with its limit (docs/capture.md gives each limit and its source).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from fieldkit.capture.landmarks import (
    CHIN,
    FOREHEAD,
    LEFT_CHEEK,
    LEFT_EYE_LIDS,
    LEFT_EYE_RING,
    MOUTH_LIPS,
    RIGHT_CHEEK,
    RIGHT_EYE_LIDS,
    RIGHT_EYE_RING,
    Points,
)

Image = npt.NDArray[np.uint8]

# Landmark 152 sits on the jaw's outline a little above the chin's lowest visible point: on
# the beardless annotated portraits the point is lower by 0.004-0.052 (mean 0.029) of the
# forehead-to-chin distance (tests/data/faces_annotations.json; bench/capture.py).
CHIN_BELOW_LANDMARK = 0.029
# Where the crown is looked for, and the plausible span when the outline is lost (hair as
# dark as the wall): crown above landmark 10 by this share of the forehead-to-chin distance.
CROWN_SEARCH = 0.9
CROWN_PLAUSIBLE = (0.25, 0.62)
CROWN_TYPICAL = 0.42


@dataclass(frozen=True)
class HeadOutline:
    """Crown and chin (frame rows) and whether the crown comes from the hair's outline."""

    crown_y: float
    chin_y: float
    crown_measured: bool


def chin_y(points: Points) -> float:
    d = float(points[CHIN, 1] - points[FOREHEAD, 1])
    return float(points[CHIN, 1]) + CHIN_BELOW_LANDMARK * d


def crown_y(bgr: Image, points: Points) -> tuple[float, bool]:
    """The top of the hair above the face: GrabCut on a small window around the head.

    Seeds: the face (convex hull of the landmarks) is sure foreground, a half-ellipse above
    the forehead probable foreground, the window's top corners and sides sure background.
    The crown is the highest row of the foreground band on the face's axis that is joined
    to the forehead. When it falls outside the plausible span (the hair as dark as the wall,
    or the head cut by the frame), a typical proportion is used and ``False`` returned.
    """
    fh_x, fh_y = float(points[FOREHEAD, 0]), float(points[FOREHEAD, 1])
    d = float(points[CHIN, 1]) - fh_y
    xs = points[:, 0]
    fw = float(xs.max() - xs.min())
    typical = fh_y - CROWN_TYPICAL * d
    if d <= 4 or fw <= 4:
        return typical, False
    x0, x1 = int(fh_x - 0.95 * fw), int(fh_x + 0.95 * fw)
    y0, y1 = int(fh_y - CROWN_SEARCH * d), int(fh_y + 0.35 * d)
    height, width = bgr.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 - cx0 < 8 or cy1 - cy0 < 8:
        return typical, False
    s = 72.0 / (x1 - x0)
    small = cv2.resize(bgr[cy0:cy1, cx0:cx1], None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    off_x, off_y = (cx0 - x0) * s, (cy0 - y0) * s  # the window may be cut by the frame

    def at(x: float, y: float) -> tuple[int, int]:
        return int((x - cx0) * s), int((y - cy0) * s)

    mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    hx, hy = at(fh_x, fh_y)
    cv2.ellipse(
        mask, (hx, hy), (int(0.55 * fw * s), int(0.55 * d * s)), 0, 180, 360, cv2.GC_PR_FGD, -1
    )
    hull = cv2.convexHull(np.array([at(float(x), float(y)) for x, y in points[:, :2]], np.int32))
    cv2.fillConvexPoly(mask, hull, cv2.GC_FGD)
    # Sure background: the top corners of what the frame holds of the window, and its
    # sides where the window lies inside the frame.
    mask[:2, : w // 5] = cv2.GC_BGD
    mask[:2, -(w // 5) :] = cv2.GC_BGD
    if off_x == 0:
        mask[: max(hy // 2, 1), :2] = cv2.GC_BGD
    if cx1 == x1:
        mask[: max(hy // 2, 1), -2:] = cv2.GC_BGD
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(20)  # GrabCut's k-means start: the same frame gives the same crown
    try:
        cv2.grabCut(small, mask, (0, 0, 1, 1), background, foreground, 2, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return typical, False
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    half = max(int(0.12 * fw * s), 1)
    band = fg[:, max(hx - half, 0) : hx + half + 1]
    rows = band.mean(axis=1) > 0.5
    r = min(max(hy, 0), h)
    while r > 0 and rows[r - 1]:
        r -= 1
    crown = cy0 + r / s
    share = (fh_y - crown) / d
    if r == 0 and off_y > 0:  # the hair runs off the frame's top edge: not measured
        return typical, False
    if not CROWN_PLAUSIBLE[0] <= share <= CROWN_PLAUSIBLE[1]:
        return typical, False
    return crown, True


def head_outline(bgr: Image, points: Points) -> HeadOutline:
    crown, measured = crown_y(bgr, points)
    return HeadOutline(crown, chin_y(points), measured)


@dataclass(frozen=True)
class Pose:
    """Head rotation in degrees: yaw (turn), pitch (nod), roll (tilt)."""

    yaw: float
    pitch: float
    roll: float


# Face Mesh depth (z) of a frontal face: the chin stands out from the forehead by this
# angle; measured as the median over the annotated portraits (bench/capture.py).
PITCH_AT_FRONTAL = 6.3


def pose(points: Points) -> Pose:
    """Yaw from the depth of the two cheek outlines, pitch from forehead and chin depth,
    roll from the eye line (image left to right)."""
    rx, ry = points[list(RIGHT_EYE_RING), :2].mean(axis=0)
    lx, ly = points[list(LEFT_EYE_RING), :2].mean(axis=0)
    roll = math.degrees(math.atan2(float(ly - ry), float(lx - rx)))
    right, left = points[RIGHT_CHEEK], points[LEFT_CHEEK]
    across = math.hypot(float(left[0] - right[0]), float(left[1] - right[1]))
    yaw = math.degrees(math.atan2(float(left[2] - right[2]), across))
    top, bottom = points[FOREHEAD], points[CHIN]
    down = math.hypot(float(bottom[0] - top[0]), float(bottom[1] - top[1]))
    pitch = math.degrees(math.atan2(float(bottom[2] - top[2]), down)) - PITCH_AT_FRONTAL
    return Pose(yaw, pitch, roll)


def _ratio(points: Points, lids: tuple[tuple[int, int], ...]) -> float:
    *pairs, (outer, inner) = lids
    width = float(np.linalg.norm(points[outer, :2] - points[inner, :2])) or 1.0
    gaps = [float(np.linalg.norm(points[a, :2] - points[b, :2])) for a, b in pairs]
    return sum(gaps) / len(gaps) / width


def eye_opening(points: Points) -> float:
    """Lid gap over eye width, the smaller of the two eyes (about 0.3 open, under 0.1 shut)."""
    return min(_ratio(points, RIGHT_EYE_LIDS), _ratio(points, LEFT_EYE_LIDS))


def mouth_opening(points: Points) -> float:
    """Gap between the inner lips over the mouth's width (0 closed)."""
    (upper, lower), (a, b) = MOUTH_LIPS
    width = float(np.linalg.norm(points[a, :2] - points[b, :2])) or 1.0
    return float(np.linalg.norm(points[upper, :2] - points[lower, :2])) / width


def _region_mean(gray: Image, polygon: npt.NDArray[np.int32]) -> float:
    x, y, w, h = cv2.boundingRect(polygon)
    x, y = max(x, 0), max(y, 0)
    patch = gray[y : y + h, x : x + w]
    if patch.size == 0:
        return 0.0
    mask = np.zeros(patch.shape, np.uint8)
    cv2.fillConvexPoly(mask, polygon - np.array([x, y], np.int32), 255)
    values = patch[mask > 0]
    return float(values.mean()) if values.size else 0.0


# Cheek patches between the eye, the nose side and the mouth corner (Face Mesh indices).
RIGHT_CHEEK_PATCH = (117, 118, 101, 36, 205, 187, 123)
LEFT_CHEEK_PATCH = (346, 347, 330, 266, 425, 411, 352)


def light_balance(gray: Image, points: Points) -> float:
    """Brightness difference of the two cheeks over their mean (0 even, 1 one side black)."""
    right = _region_mean(gray, points[list(RIGHT_CHEEK_PATCH), :2].astype(np.int32))
    left = _region_mean(gray, points[list(LEFT_CHEEK_PATCH), :2].astype(np.int32))
    mean = (right + left) / 2 or 1.0
    return abs(right - left) / mean


def eye_glare(gray: Image, points: Points) -> float:
    """Share of near-white pixels (>= 250) around the eyes, where glasses reflect."""
    shares = []
    for ring in (RIGHT_EYE_RING, LEFT_EYE_RING):
        eye = points[list(ring), :2]
        (x0, y0), (x1, y1) = eye.min(axis=0), eye.max(axis=0)
        pad_x, pad_y = (x1 - x0) * 0.35, (y1 - y0) * 1.2
        patch = gray[
            max(int(y0 - pad_y), 0) : int(y1 + pad_y) + 1,
            max(int(x0 - pad_x), 0) : int(x1 + pad_x) + 1,
        ]
        shares.append(float(np.count_nonzero(patch >= 250)) / max(patch.size, 1))
    return max(shares)
