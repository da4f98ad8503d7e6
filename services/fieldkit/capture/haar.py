"""The previous head estimate from OpenCV's Haar cascades, kept as a baseline. R3

Until issue 20 the photo checks found faces with the Haar cascades that ship with
opencv-python-headless 4.x and estimated the crown and chin as fixed ratios of the face box
(crown = box top - 0.5 h, chin = box top + 1.1 h, calibrated on the astronaut portrait).
``bench/capture.py`` measures that estimate beside the landmark model in the same run, and
the astronaut test scenes place the portrait by these ratios. The live checks do not use it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels

# Head extent relative to the Haar frontal-face box (height h, top y).
CROWN_ABOVE_BOX = 0.5
CHIN_BELOW_BOX = 1.1


class HaarHeadEstimate:
    """Faces from the Haar cascade, crown and chin from the box ratios."""

    DETECT_WIDTH = 256
    REFINE_FACE = 64

    def __init__(self) -> None:
        cascades = cv2.data.haarcascades  # type: ignore[attr-defined]
        self._faces = cv2.CascadeClassifier(cascades + "haarcascade_frontalface_default.xml")
        if self._faces.empty():
            raise RuntimeError("the Haar cascades of opencv-python-headless are missing")

    def find_faces(self, gray: Image) -> list[Box]:
        """Faces, largest first: a coarse pass on a small frame, then each box refined."""
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

    @staticmethod
    def crown_and_chin(face: Box) -> tuple[float, float]:
        _, y, _, h = face
        return y - CROWN_ABOVE_BOX * h, y + CHIN_BELOW_BOX * h
