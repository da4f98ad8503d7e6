"""The camera preview: the guide drawn on the mirrored frame, and the loopback MJPEG server that
the kiosk page shows with a plain ``<img>`` (preview frames never touch the broker)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import numpy.typing as npt

from fieldkit.capture.messages import Mode
from fieldkit.capture.photo import Guide, PhotoAssessment

Image = npt.NDArray[np.uint8]
# (token, the frame the caller has, how long to wait) -> the next frame, b"" when none came,
# None when the token is not the session's.
FrameAfter = Callable[[str, bytearray | None, float], bytes | None]


def draw_guide(frame: Image, guide: Guide, mode: Mode, assessment: PhotoAssessment | None) -> Image:
    """The preview as the applicant sees it: mirrored, with the head guide drawn on."""
    view = np.ascontiguousarray(
        frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    )
    view = np.asarray(cv2.flip(view, 1), dtype=np.uint8)
    colour = (0, 200, 0) if assessment is not None and assessment.passed else (0, 160, 255)
    x0, y0 = view.shape[1] - guide.x - guide.width, guide.y
    if mode == "photo":
        mm = guide.px_per_mm
        cv2.rectangle(view, (x0, y0), (x0 + guide.width, y0 + guide.height), colour, 2)
        # The head oval: crown 4 mm from the top, chin at 38 mm (34 mm head), centred.
        cx = x0 + guide.width // 2
        cy = int(y0 + (4 + 17) * mm)
        cv2.ellipse(view, (cx, cy), (int(13 * mm), int(17 * mm)), 0, 0, 360, colour, 2)
    elif mode == "qr":
        side = min(view.shape[0], view.shape[1]) // 2
        cx, cy = view.shape[1] // 2, view.shape[0] // 2
        cv2.rectangle(
            view,
            (cx - side // 2, cy - side // 2),
            (cx + side // 2, cy + side // 2),
            (255, 160, 0),
            3,
        )
    return np.asarray(view, dtype=np.uint8)


def preview_server(
    frame_after: FrameAfter,
    latest: Callable[[], bytearray],
    stopping: threading.Event,
    address: tuple[str, int],
) -> ThreadingHTTPServer:
    """The MJPEG preview on loopback: ``/preview/<token>.mjpg`` (a stream) or ``.jpg`` (one
    frame); an unknown token is a 404. Never logs a request line (it holds the token)."""
    boundary = "fieldkitframe"

    class PreviewHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            # The request line holds the session's preview token: never log it.
            return

        def _headers(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Pragma", "no-cache")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if not path.startswith("/preview/"):
                self.send_error(404)
                return
            name = path.removeprefix("/preview/")
            token, _, kind = name.rpartition(".")
            if kind not in {"mjpg", "jpg"} or not token:
                self.send_error(404)
                return
            first = frame_after(token, None, 5.0)
            if not first:
                self.send_error(404)
                return
            if kind == "jpg":
                self._headers("image/jpeg")
                self.wfile.write(first)
                return
            self._headers(f"multipart/x-mixed-replace; boundary={boundary}")
            frame: bytes | None = first
            try:
                while frame is not None and not stopping.is_set():
                    if frame:
                        self.wfile.write(
                            f"--{boundary}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(frame)}\r\n\r\n".encode()
                        )
                        self.wfile.write(frame)
                        self.wfile.write(b"\r\n")
                    frame = frame_after(token, latest(), 1.0)
            except (BrokenPipeError, ConnectionResetError):
                return

    server = ThreadingHTTPServer(address, PreviewHandler)
    server.daemon_threads = True
    return server
