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
from fieldkit.capture.segmentation import Mask, PersonSegmentation

Image = npt.NDArray[np.uint8]

# Landmark 152 sits on the jaw's outline a little above the chin's lowest visible point: on
# the beardless annotated portraits the point is lower by 0.004-0.052 (mean 0.029) of the
# forehead-to-chin distance (tests/data/faces_annotations.json; bench/capture.py).
CHIN_BELOW_LANDMARK = 0.029
# Where the crown is looked for, and the plausible span when the outline is lost (hair as
# dark as the wall): crown above landmark 10 by this share of the forehead-to-chin distance.
CROWN_PLAUSIBLE = (0.25, 0.62)
CROWN_TYPICAL = 0.42
# The window segmented for the crown, in forehead-to-chin distances: a square centred on the
# top of the forehead that holds the head, the neck and the tops of the shoulders, as in the
# selfies the model was trained on (2.4 and 3.0 were measured too: bench/capture.py, and
# leave-one-out over the annotated portraits picks 3.6 every time). The band of columns
# averaged about the face's axis, each side. The probability from which a mask pixel is the
# person: the model's own midpoint, not fitted.
CROWN_WINDOW = 3.6
CROWN_BAND = 0.08
PERSON = 0.5


@dataclass(frozen=True)
class HeadOutline:
    """Crown and chin (frame rows) and whether the crown comes from the hair's outline.

    ``forehead`` (landmark 10) and ``reused`` (frames since the outline was segmented) let
    the next frame keep this crown while the head has not moved (``head_outline``).
    """

    crown_y: float
    chin_y: float
    crown_measured: bool
    forehead: tuple[float, float] = (0.0, 0.0)
    reused: int = 0
    # The share of the top of the head that is neither skin nor hair (``covering_share``),
    # read on the same segmented window as the crown and kept with it.
    covering: float = 0.0

    @property
    def crown_share(self) -> float:
        """The crown above the forehead, in forehead-to-chin distances."""
        d = self.chin_y - self.forehead[1]
        return (self.forehead[1] - self.crown_y) / d if d > 0 else 0.0


def chin_y(points: Points) -> float:
    d = float(points[CHIN, 1] - points[FOREHEAD, 1])
    return float(points[CHIN, 1]) + CHIN_BELOW_LANDMARK * d


def typical_crown(points: Points) -> float:
    """The crown at the typical proportion above the forehead, when it cannot be measured."""
    d = float(points[CHIN, 1] - points[FOREHEAD, 1])
    return float(points[FOREHEAD, 1]) - CROWN_TYPICAL * d


def plausible_crown(points: Points, crown: float) -> bool:
    """Whether a crown lies in the span real heads have above the forehead."""
    d = float(points[CHIN, 1] - points[FOREHEAD, 1])
    share = (float(points[FOREHEAD, 1]) - crown) / d if d > 0 else 0.0
    return CROWN_PLAUSIBLE[0] <= share <= CROWN_PLAUSIBLE[1]


def crown_window(points: Points, side: float = CROWN_WINDOW) -> tuple[float, float, float]:
    """The square segmented for the crown: centred on landmark 10 (the top of the forehead),
    ``side`` forehead-to-chin distances wide; its left, top and side in frame pixels."""
    fh_x, fh_y = float(points[FOREHEAD, 0]), float(points[FOREHEAD, 1])
    width = side * float(points[CHIN, 1] - fh_y)
    return fh_x - width / 2, fh_y - width / 2, width


def crown_from_mask(mask: Mask, window: tuple[float, float, float], points: Points) -> float | None:
    """The top of the person's outline on the face's axis above the forehead (frame row),
    or None where it reaches the window's or the frame's top (the hair runs off).

    A band of columns about the forehead's x, averaged; from the forehead upwards, the first
    row whose person probability falls under one half, placed between rows by interpolation.
    """
    x0, y0, side = window
    n = int(mask.shape[0])
    s = n / side
    fh_x, fh_y = float(points[FOREHEAD, 0]), float(points[FOREHEAD, 1])
    d = float(points[CHIN, 1]) - fh_y
    hx, hy = (fh_x - x0) * s, (fh_y - y0) * s
    half = max(int(CROWN_BAND * d * s), 1)
    band = mask[:, max(int(hx) - half, 0) : int(hx) + half + 1].mean(axis=1)
    r = min(max(int(hy), 0), n - 1)
    while r > 0 and band[r - 1] >= PERSON:
        r -= 1
    if r == 0:
        return None
    below, above = float(band[r]), float(band[r - 1])
    between = (PERSON - above) / (below - above) if below > above else 0.5
    crown = y0 + (r - 0.5 + between) / s  # row centres at i + 0.5
    if crown < 1.0 / s:  # at the frame's top edge: the window above it is black
        return None
    return crown


def crown_y(
    rgb: Image, points: Points, segmentation: PersonSegmentation
) -> tuple[float, bool, float]:
    """The top of the hair above the face, from the person's outline (Selfie Segmentation on
    a window around the head), and the head covering's share on the same window. Where the
    outline runs off the top or falls outside the plausible span, the typical proportion is
    used and ``False`` returned."""
    d = float(points[CHIN, 1] - points[FOREHEAD, 1])
    if d <= 4:
        return typical_crown(points), False, 0.0
    window = crown_window(points)
    mask, seen = segmentation.window(rgb, *window)
    covering = covering_share(seen, mask, window, points)
    crown = crown_from_mask(mask, window, points)
    if crown is None or not plausible_crown(points, crown):
        return typical_crown(points), False, covering
    return crown, True, covering


# The head covering (無帽, no hat). Skin is read on the cheeks, hair on the eyebrows and
# beside the face between the eyes and the nose tip (below where a hat reaches); the top of
# the head is the person's pixels above the forehead (landmark 10) between the temples.
# Colours are compared in OpenCV's 8-bit Lab, quantised in steps of 24 (lightness) and 6
# (a, b): a colour of the top is familiar when it or a neighbouring step occurs among the
# reference pixels (at least 0.2 % of them). Hair lit from above is lighter than beside the
# face and its shade varies: the lightness step is the coarse one.
# Each brow: its upper contour, then its lower contour back (Face Mesh's outline). Only
# the brow's upper half is a reference: glasses' frames run along the lower edge of the brows,
# and a dark frame there made a dark hat "familiar" (a real photograph of a navy officer's cap
# over glasses, tests/data/hats/, read 0.33 with the whole brows and 0.72 with their upper
# halves; docs/capture.md).
BROWS = (
    (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    (336, 296, 334, 293, 300, 276, 283, 282, 295, 285),
)
TEMPLES = (127, 356)
NOSE_TIP = 1
COVERING_STEPS = (24, 6)
# A pixel is surely the person (and not the wall at the outline's soft edge) from this
# probability; the hair beside the face is looked for this many forehead-to-chin distances
# out from the cheek outline. (0.8 and 0.2 let a red flag behind obama2.jpg into the hair's
# colours; without the hair beside the face, grey hair above dark brows reads as 0.22.)
COVERING_PERSON = 0.95
COVERING_SIDE = 0.12
COVERING_SEEN = 0.002  # a reference colour counts from this share of the reference pixels


def brow_polygon(
    p: npt.NDArray[np.float32], brow: tuple[int, ...], whole: bool = False
) -> npt.NDArray[np.float32]:
    """One brow's reference area: its upper half (from the upper contour down to midway to
    the lower contour), or with ``whole`` the whole brow (the check before glasses were seen
    on a real photograph; bench/capture.py measures both)."""
    outline = p[list(brow), :2]
    if whole:
        return np.asarray(outline, np.float32)
    upper, lower = outline[:5], outline[5:][::-1]  # both outer to inner
    return np.asarray(np.vstack([upper, ((upper + lower) / 2)[::-1]]), np.float32)


def covering_share(
    seen: Image,
    mask: Mask,
    window: tuple[float, float, float],
    points: Points,
    whole_brows: bool = False,
) -> float:
    """The share of the top of the head whose colour is neither the applicant's skin nor
    their hair: about 0 bare-headed, near 1 under a hat of another colour than the hair.

    ``seen`` and ``mask`` are the segmented window (``crown_window``) as the model saw it;
    the landmarks are moved into it. The top of the head: the person (probability at least
    ``COVERING_PERSON``) above landmark 10, up to the plausible crown, between landmarks
    127 and 356 (the temples). ``whole_brows``: the earlier reference (the whole brows,
    glasses' frames included), kept for the bench's before and after.
    """
    x0, y0, side = window
    n = int(mask.shape[0])
    s = n / side
    p = (points[:, :2] - np.array([x0, y0], np.float32)) * s
    d = float(p[CHIN, 1] - p[FOREHEAD, 1])
    person = mask >= COVERING_PERSON
    lab = np.asarray(cv2.cvtColor(seen, cv2.COLOR_RGB2LAB), np.uint8)
    reference = np.zeros((n, n), np.uint8)
    for patch in (RIGHT_CHEEK_PATCH, LEFT_CHEEK_PATCH):
        cv2.fillConvexPoly(reference, np.round(p[list(patch)]).astype(np.int32), 1)
    for brow in BROWS:
        cv2.fillPoly(reference, [np.round(brow_polygon(p, brow, whole_brows)).astype(np.int32)], 1)
    eyes_y = round(float(p[[33, 263], 1].mean()))
    nose_y = round(float(p[NOSE_TIP, 1]))
    right, left = float(p[RIGHT_CHEEK, 0]), float(p[LEFT_CHEEK, 0])
    beside = np.zeros((n, n), bool)
    beside[eyes_y:nose_y, max(round(right - COVERING_SIDE * d), 0) : max(round(right) - 2, 0)] = (
        True
    )
    beside[eyes_y:nose_y, round(left) + 2 : max(round(left + COVERING_SIDE * d), 0)] = True
    known = (reference > 0) | (beside & person)
    top = np.zeros((n, n), bool)
    fy = float(p[FOREHEAD, 1])
    t0, t1 = float(p[TEMPLES[0], 0]), float(p[TEMPLES[1], 0])
    top[
        max(round(fy - CROWN_PLAUSIBLE[1] * d), 0) : max(round(fy), 0),
        max(round(t0), 0) : max(round(t1), 0),
    ] = True
    top &= person
    if not top.any() or not known.any():
        return 0.0
    steps = np.array([COVERING_STEPS[0], *COVERING_STEPS[1:] * 2], np.int32)
    bins = (256 + steps - 1) // steps
    ref = lab[known].astype(np.int32) // steps
    counts = np.zeros(tuple(int(b) for b in bins), np.int32)
    np.add.at(counts, (ref[:, 0], ref[:, 1], ref[:, 2]), 1)
    seen_colours = (counts >= max(2, COVERING_SEEN * len(ref))).astype(np.uint8)
    # A neighbouring step counts too: dilate the colours seen by one step each way.
    padded = np.pad(seen_colours, 1)
    familiar = np.zeros_like(seen_colours)
    b0, b1, b2 = seen_colours.shape
    for dl in range(3):
        for da in range(3):
            for db in range(3):
                familiar |= padded[dl : dl + b0, da : da + b1, db : db + b2]
    q = lab[top].astype(np.int32) // steps
    return float(1.0 - familiar[q[:, 0], q[:, 1], q[:, 2]].mean())


# A crown measured on an earlier frame is kept while the forehead and the chin have each moved
# less than this (frame pixels, about 0.3 mm at 14.4 px/mm), for at most this many frames in
# a row, so a run of frames that triggers the auto-capture (5) segments at least once.
STILL_PX = 4.0
REUSE_FRAMES = 3


def head_outline(
    rgb: Image,
    points: Points,
    segmentation: PersonSegmentation,
    previous: HeadOutline | None = None,
) -> HeadOutline:
    """Crown (from the person's outline) and chin (from the landmarks) of one head.

    With the previous frame's outline, a measured crown is carried over while the head is
    still (the segmentation is the costliest step after the face detector): the crown keeps
    its place relative to the forehead and the chin.
    """
    forehead = (float(points[FOREHEAD, 0]), float(points[FOREHEAD, 1]))
    chin = chin_y(points)
    if (
        previous is not None
        and previous.crown_measured
        and previous.reused < REUSE_FRAMES
        and math.dist(previous.forehead, forehead) <= STILL_PX
        and abs(previous.chin_y - chin) <= STILL_PX
    ):
        crown = forehead[1] - previous.crown_share * (chin - forehead[1])
        return HeadOutline(crown, chin, True, forehead, previous.reused + 1, previous.covering)
    crown, measured, covering = crown_y(rgb, points, segmentation)
    return HeadOutline(crown, chin, measured, forehead, covering=covering)


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
