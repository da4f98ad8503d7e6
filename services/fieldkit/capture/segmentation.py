"""The person's outline (hair included) from MediaPipe Selfie Segmentation, run with LiteRT. R3

Model (Apache 2.0, Google): Selfie Segmentation, general (square) variant, 256 x 256 RGB in
[0, 1] in, the probability that each pixel belongs to a person out. The file ships with
fieldkit (``data/face-models/``: source, licence and hash in its README) and runs on
``ai-edge-litert`` on one thread. Nothing is downloaded at run time.

Only a square window around the head is segmented (``head.py`` chooses it), so the mask's
256 rows cover the head at about 0.2-0.35 mm per row at print scale rather than the whole
frame's 720 rows at 2.8 mm.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

from fieldkit.capture.landmarks import model_folder

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.float32]


class PersonSegmentation:
    """Selfie Segmentation on a square window of the frame, loaded once per process."""

    SIZE = 256
    MODEL = "selfie_segmentation.tflite"

    def __init__(self, folder: Path | None = None) -> None:
        path = (folder or model_folder()) / self.MODEL
        self._model = Interpreter(model_path=str(path), num_threads=1)
        self._model.allocate_tensors()
        self._input = self._model.get_input_details()[0]["index"]
        self._output = self._model.get_output_details()[0]["index"]

    def window_mask(self, rgb: Image, x0: float, y0: float, side: float) -> Mask:
        """Person probability (256 x 256) of the square window at (x0, y0) with the given
        side in frame pixels; the parts of the window outside the frame are black."""
        return self.window(rgb, x0, y0, side)[0]

    def window(self, rgb: Image, x0: float, y0: float, side: float) -> tuple[Mask, Image]:
        """The person probability of the window and the window itself as the model saw it
        (256 x 256 RGB, outside the frame black): the head-covering check reads its colours
        on the same pixels as the outline."""
        n = self.SIZE
        seen = np.zeros((n, n, 3), np.uint8)
        height, width = rgb.shape[:2]
        s = n / side
        fx0, fy0 = max(int(x0), 0), max(int(y0), 0)
        fx1, fy1 = min(int(x0 + side), width), min(int(y0 + side), height)
        tx0, ty0 = round((fx0 - x0) * s), round((fy0 - y0) * s)
        tx1, ty1 = min(round((fx1 - x0) * s), n), min(round((fy1 - y0) * s), n)
        if fx1 - fx0 >= 2 and fy1 - fy0 >= 2 and tx1 - tx0 >= 1 and ty1 - ty0 >= 1:
            part = cv2.resize(
                rgb[fy0:fy1, fx0:fx1], (tx1 - tx0, ty1 - ty0), interpolation=cv2.INTER_AREA
            )
            seen[ty0:ty1, tx0:tx1] = part
        self._model.set_tensor(self._input, (seen.astype(np.float32) / 255.0)[None])
        self._model.invoke()
        mask = np.asarray(self._model.get_tensor(self._output)[0, :, :, 0], np.float32)
        return mask, seen
