"""Faces and dense face landmarks from Google's MediaPipe models, run with LiteRT. R3

Models (Apache 2.0, Google): BlazeFace full range (every face in the frame, 192 x 192 input)
and Face Mesh (468 landmarks, 192 x 192 input). The model files ship with fieldkit
(``data/face-models/``: source, licence and hashes in its README). The interpreter is
``ai-edge-litert`` (Apache 2.0), on one thread. Nothing is downloaded at run time.
docs/capture.md compares these models with the Haar cascades and dlib.

The decoding follows MediaPipe's graphs (``face_detection_*_common.pbtxt``: SSD anchors,
sigmoid scores, boxes relative to anchors; ``face_landmark_front_cpu.pbtxt``: the landmark
ROI is the detection box, square, 1.5 times as large, rotated so the eyes are level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

Image = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float32]

# Face Mesh landmark indices (MediaPipe canonical face model).
CHIN = 152
FOREHEAD = 10
NOSE_TIP = 1
RIGHT_EYE_RING = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_RING = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# Eyelids (upper, lower) and corners (outer, inner), for the eye-opening ratio.
RIGHT_EYE_LIDS = ((159, 145), (158, 153), (160, 144), (33, 133))
LEFT_EYE_LIDS = ((386, 374), (385, 380), (387, 373), (263, 362))
MOUTH_LIPS = ((13, 14), (61, 291))  # inner upper/lower lip, mouth corners
RIGHT_CHEEK = 234  # face outline at the cheekbone, applicant's right (image left)
LEFT_CHEEK = 454


def model_folder() -> Path:
    """The MediaPipe model files, shipped with fieldkit (data/face-models/README.md)."""
    return Path(__file__).resolve().parent.parent / "data" / "face-models"


@dataclass(frozen=True)
class FaceFound:
    """One face from the detector, in frame pixels."""

    x: float
    y: float
    width: float
    height: float
    score: float
    right_eye: tuple[float, float]  # the person's right eye (left in the image)
    left_eye: tuple[float, float]

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.width / 2, self.y + self.height / 2)


def _anchors(size: int, strides: list[int], interpolated: bool) -> Points:
    """SSD anchor centres as MediaPipe's SsdAnchorsCalculator makes them (fixed size 1)."""
    centres: list[tuple[float, float]] = []
    i = 0
    while i < len(strides):
        stride, per_location = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            per_location += 1 + int(interpolated)
            i += 1
        cells = math.ceil(size / stride)
        for row in range(cells):
            for col in range(cells):
                centres.extend([((col + 0.5) / cells, (row + 0.5) / cells)] * per_location)
    return np.array(centres, np.float32)


class _Detector:
    def __init__(self, path: Path, size: int, strides: list[int], interpolated: bool) -> None:
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.size = size
        self.anchors = _anchors(size, strides, interpolated)
        details = self.interpreter.get_output_details()
        by_width = sorted(details, key=lambda d: int(d["shape"][-1]))
        self.scores_index, self.boxes_index = by_width[0]["index"], by_width[1]["index"]
        self.input_index = self.interpreter.get_input_details()[0]["index"]

    def __call__(self, rgb: Image, min_score: float) -> list[FaceFound]:
        height, width = rgb.shape[:2]
        scale = self.size / max(width, height)
        resized = cv2.resize(
            rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
        )
        pad_x, pad_y = (self.size - resized.shape[1]) // 2, (self.size - resized.shape[0]) // 2
        tensor = np.zeros((self.size, self.size, 3), np.float32)
        tensor[pad_y : pad_y + resized.shape[0], pad_x : pad_x + resized.shape[1]] = (
            resized.astype(np.float32) / 127.5 - 1.0
        )
        self.interpreter.set_tensor(self.input_index, tensor[None])
        self.interpreter.invoke()
        raw_scores = self.interpreter.get_tensor(self.scores_index).reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -80, 80)))
        keep = np.flatnonzero(scores >= min_score)
        if keep.size == 0:
            return []
        raw = self.interpreter.get_tensor(self.boxes_index).reshape(len(scores), -1)[keep]
        anchors = self.anchors[keep]
        coords = raw / self.size
        cx, cy = coords[:, 0] + anchors[:, 0], coords[:, 1] + anchors[:, 1]
        w, h = coords[:, 2], coords[:, 3]

        def to_frame(nx: npt.NDArray[np.float32], ny: npt.NDArray[np.float32]) -> Points:
            return np.stack(
                [(nx * self.size - pad_x) / scale, (ny * self.size - pad_y) / scale], axis=1
            ).astype(np.float32)

        tl = to_frame(cx - w / 2, cy - h / 2)
        br = to_frame(cx + w / 2, cy + h / 2)
        right_eye = to_frame(coords[:, 4] + anchors[:, 0], coords[:, 5] + anchors[:, 1])
        left_eye = to_frame(coords[:, 6] + anchors[:, 0], coords[:, 7] + anchors[:, 1])
        boxes = [
            (float(a[0]), float(a[1]), float(b[0] - a[0]), float(b[1] - a[1]))
            for a, b in zip(tl, br, strict=True)
        ]
        picked = cv2.dnn.NMSBoxes(boxes, scores[keep].tolist(), min_score, 0.3)
        return [
            FaceFound(
                boxes[i][0],
                boxes[i][1],
                boxes[i][2],
                boxes[i][3],
                float(scores[keep][i]),
                (float(right_eye[i][0]), float(right_eye[i][1])),
                (float(left_eye[i][0]), float(left_eye[i][1])),
            )
            for i in np.asarray(picked).reshape(-1)
        ]


class FaceModels:
    """The face detectors and the landmark model, loaded once per process."""

    LANDMARK_SIZE = 192

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or model_folder()
        self.full_range = _Detector(folder / "face_detection_full_range.tflite", 192, [4], False)
        self._mesh = Interpreter(model_path=str(folder / "face_landmark.tflite"), num_threads=1)
        self._mesh.allocate_tensors()
        outputs = sorted(self._mesh.get_output_details(), key=lambda d: int(d["shape"][-1]))
        self._mesh_flag, self._mesh_points = outputs[0]["index"], outputs[-1]["index"]
        self._mesh_input = self._mesh.get_input_details()[0]["index"]

    def every_face(self, rgb: Image, min_score: float = 0.3) -> list[FaceFound]:
        """Every face, also small or cut ones at the sides: the whole frame, then its left
        and right 55 % at twice the resolution, merged (overlaps kept once), largest first."""
        found = self.full_range(rgb, min_score)
        width = rgb.shape[1]
        part = int(width * 0.55)
        for x0 in (0, width - part):
            for f in self.full_range(np.ascontiguousarray(rgb[:, x0 : x0 + part]), min_score):
                found.append(
                    FaceFound(
                        f.x + x0,
                        f.y,
                        f.width,
                        f.height,
                        f.score,
                        (f.right_eye[0] + x0, f.right_eye[1]),
                        (f.left_eye[0] + x0, f.left_eye[1]),
                    )
                )
        boxes = [(f.x, f.y, f.width, f.height) for f in found]
        if not boxes:
            return []
        keep = cv2.dnn.NMSBoxes(boxes, [f.score for f in found], min_score, 0.3)
        kept = [found[i] for i in np.asarray(keep).reshape(-1)]
        return sorted(kept, key=lambda f: f.width * f.height, reverse=True)

    def mesh(self, rgb: Image, face: FaceFound) -> tuple[Points, float]:
        """468 landmarks (x, y in frame pixels, z) of one face, and the model's face score."""
        (rx, ry), (lx, ly) = face.right_eye, face.left_eye
        angle = math.atan2(ly - ry, lx - rx)
        side = max(face.width, face.height) * 1.5
        cx, cy = face.centre
        n = self.LANDMARK_SIZE
        cos, sin = math.cos(angle) * side / n, math.sin(angle) * side / n
        # Maps ROI pixels (u, v) to frame pixels: rotate by the eye-line angle, scale, shift.
        to_frame = np.array(
            [
                [cos, -sin, cx - cos * n / 2 + sin * n / 2],
                [sin, cos, cy - sin * n / 2 - cos * n / 2],
            ],
            np.float64,
        )
        to_roi = cv2.invertAffineTransform(to_frame)
        roi = cv2.warpAffine(rgb, to_roi, (n, n), flags=cv2.INTER_LINEAR)
        self._mesh.set_tensor(self._mesh_input, (roi.astype(np.float32) / 255.0)[None])
        self._mesh.invoke()
        flag = float(
            1.0 / (1.0 + math.exp(-float(self._mesh.get_tensor(self._mesh_flag).ravel()[-1])))
        )
        raw = self._mesh.get_tensor(self._mesh_points).reshape(-1, 3)[:468].astype(np.float64)
        xy = raw[:, :2] @ to_frame[:, :2].T + to_frame[:, 2]
        points = np.concatenate([xy, raw[:, 2:3] * side / n], axis=1).astype(np.float32)
        return points, flag


def eye_centres(points: Points) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centres of the person's right and left eye: the mean of each eye's contour."""
    right = points[list(RIGHT_EYE_RING), :2].mean(axis=0)
    left = points[list(LEFT_EYE_RING), :2].mean(axis=0)
    return (float(right[0]), float(right[1])), (float(left[0]), float(left[1]))
