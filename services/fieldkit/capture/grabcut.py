"""The crown measured by GrabCut, as before Selfie Segmentation, kept as a baseline. R3

Until the crown came from a person segmentation model (``head.py``), it was the top of the
foreground that OpenCV's GrabCut found around the head. It lost the outline on busy or dark
backgrounds (docs/capture.md lists the portraits). ``bench/capture.py`` measures it beside
the segmentation in the same run; the live checks do not use it.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fieldkit.capture.head import plausible_crown, typical_crown
from fieldkit.capture.landmarks import CHIN, FOREHEAD, Points

Image = npt.NDArray[np.uint8]

# Where the crown is looked for: above landmark 10 by this share of the forehead-to-chin
# distance.
CROWN_SEARCH = 0.9


def crown_by_grabcut(bgr: Image, points: Points) -> tuple[float, bool]:
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
    typical = typical_crown(points)
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
    if r == 0 and off_y > 0:  # the hair runs off the frame's top edge: not measured
        return typical, False
    if not plausible_crown(points, crown):
        return typical, False
    return crown, True
