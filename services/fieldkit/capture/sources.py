"""Camera sources behind one interface: a V4L2 device, a video file, an image folder, a demo.

Every source delivers BGR frames of any size; a missing, busy or unreadable camera raises
``CameraUnavailable`` with a reason for the operator, and the service retries (it never
crashes on a camera). Frames are personal data once an applicant is in view: sources keep
no copies beyond the frame they return.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from fieldkit.capture import synthetic
from fieldkit.capture.appid import DEMO_ID as DEMO_ID  # re-exported: the demo source shows it

Image = npt.NDArray[np.uint8]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class CameraUnavailable(Exception):
    """The camera cannot deliver frames now; ``reason`` says why, in words for the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameSource(Protocol):
    description: str

    def open(self) -> None: ...

    def read(self) -> Image: ...

    def close(self) -> None: ...


class V4L2Source:
    """A USB webcam through OpenCV's V4L2 backend."""

    def __init__(self, device: str, width: int, height: int, fps: float) -> None:
        self.device = device
        self.description = f"camera {device}"
        self.width, self.height, self.fps = width, height, fps
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        target: int | str = int(self.device) if self.device.isdigit() else self.device
        if isinstance(target, str) and not Path(target).exists():
            raise CameraUnavailable(f"{self.description} is not connected")
        capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise CameraUnavailable(f"{self.description} cannot be opened (missing or in use)")
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        self._capture = capture

    def read(self) -> Image:
        if self._capture is None:
            raise CameraUnavailable(f"{self.description} is not open")
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise CameraUnavailable(f"{self.description} stopped delivering frames")
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class VideoFileSource:
    """A recorded video, looped, at its own frame rate (for demos and field-issue replays)."""

    def __init__(self, path: Path, loop: bool = True) -> None:
        self.path = path
        self.loop = loop
        self.description = f"video file {path.name}"
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        if not self.path.is_file():
            raise CameraUnavailable(f"{self.description} does not exist")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise CameraUnavailable(f"{self.description} cannot be decoded")
        self._capture = capture

    def read(self) -> Image:
        if self._capture is None:
            raise CameraUnavailable(f"{self.description} is not open")
        ok, frame = self._capture.read()
        if not ok and self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
        if not ok or frame is None:
            raise CameraUnavailable(f"{self.description} has no more frames")
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageFolderSource:
    """The images of a folder in name order, each shown for ``repeat`` frames, looped."""

    def __init__(self, folder: Path, repeat: int = 1) -> None:
        self.folder = folder
        self.repeat = max(repeat, 1)
        self.description = f"image folder {folder.name}"
        self._files: list[Path] = []
        self._index = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise CameraUnavailable(f"{self.description} does not exist")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraUnavailable(f"{self.description} holds no images")
        self._index = 0

    def read(self) -> Image:
        if not self._files:
            raise CameraUnavailable(f"{self.description} is not open")
        path = self._files[(self._index // self.repeat) % len(self._files)]
        self._index += 1
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise CameraUnavailable(f"{self.description}: {path.name} cannot be read")
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self._files = []


class DemoSource:
    """A scene generated in code: a form with its QR code, then a drawn face, in turns.

    Lets ``fieldkit up`` run on a machine with no camera; the form's QR holds ``DEMO_ID``.
    """

    def __init__(self, width: int, height: int, seconds_each: float = 6.0) -> None:
        self.description = "demo camera"
        self.size = (width, height)
        self.seconds_each = seconds_each
        self._form: Image | None = None
        self._face: Image | None = None
        self._started = 0.0
        self._lock = threading.Lock()

    def open(self) -> None:
        modules = synthetic.opencv_qr_modules(
            f"https://example.invalid/apply?id={DEMO_ID}".encode()
        )
        rng = np.random.default_rng(0)
        form = synthetic.photographed_form(modules, "clean", rng)
        self._form = np.asarray(
            cv2.cvtColor(cv2.resize(form, self.size), cv2.COLOR_GRAY2BGR), dtype=np.uint8
        )
        self._face = synthetic.demo_face(self.size, fit_guide=True)
        self._started = time.monotonic()

    def read(self) -> Image:
        if self._form is None or self._face is None:
            raise CameraUnavailable(f"{self.description} is not open")
        phase = int((time.monotonic() - self._started) / self.seconds_each) % 2
        return (self._form if phase == 0 else self._face).copy()

    def close(self) -> None:
        self._form = self._face = None


def source_from_config(spec: str, width: int, height: int, fps: float) -> FrameSource:
    """The source a ``[capture] source`` setting names."""
    if spec == "demo":
        return DemoSource(width, height)
    kind, _, rest = spec.partition(":")
    if kind == "v4l2":
        return V4L2Source(rest, width, height, fps)
    if kind == "video":
        return VideoFileSource(Path(rest))
    if kind == "images":
        return ImageFolderSource(Path(rest))
    raise ValueError("source must be demo, v4l2:<device>, video:<file> or images:<folder>")
