"""Camera sources behind one interface, and their error states. R9"""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fieldkit.capture.appid import read_application_id
from fieldkit.capture.photo import PhotoAnalyzer
from fieldkit.capture.qr import FormReader
from fieldkit.capture.sources import (
    DEMO_ID,
    CameraUnavailable,
    DemoSource,
    ImageFolderSource,
    V4L2Source,
    VideoFileSource,
    source_from_config,
)
from fieldkit.config import ConfigError, load_config
from tests.conftest import write_config


def _solid(value: int) -> np.ndarray:
    return np.full((120, 160, 3), value, np.uint8)


def test_an_image_folder_is_played_in_name_order_and_looped(tmp_path: Path) -> None:
    for name, value in (("b.png", 200), ("a.png", 100), ("notes.txt", 0)):
        if name.endswith(".png"):
            cv2.imwrite(str(tmp_path / name), _solid(value))
        else:
            (tmp_path / name).write_text("not an image")
    source = ImageFolderSource(tmp_path)
    source.open()
    seen = [int(source.read().mean()) for _ in range(4)]
    assert seen == [100, 200, 100, 200]
    source.close()


def test_a_video_file_is_read_and_looped(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (160, 120))
    for value in (40, 120, 220):
        writer.write(_solid(value))
    writer.release()
    source = VideoFileSource(path)
    source.open()
    seen = [round(source.read().mean(), -1) for _ in range(5)]
    assert seen == [40, 120, 220, 40, 120]
    source.close()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: ImageFolderSource(p / "missing"), "does not exist"),
        (lambda p: ImageFolderSource(p), "holds no images"),
        (lambda p: VideoFileSource(p / "none.mp4"), "does not exist"),
        (lambda p: V4L2Source("/dev/video-not-here", 1280, 720, 15), "not connected"),
        (lambda p: V4L2Source("63", 1280, 720, 15), "cannot be opened"),
    ],
)
def test_a_missing_source_raises_a_clear_reason(tmp_path: Path, make: object, reason: str) -> None:
    assert callable(make)
    source = make(tmp_path)
    with pytest.raises(CameraUnavailable, match=reason):
        source.open()


def test_a_video_file_that_is_not_a_video_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(CameraUnavailable, match=r"cannot be decoded|no more frames"):
        source = VideoFileSource(path, loop=False)
        source.open()
        source.read()


def test_the_demo_source_shows_a_readable_form_then_a_compliant_face() -> None:
    """So `fieldkit up` works with no camera: the form holds the fixed demo ID, never a real one."""
    source = DemoSource(1280, 720, seconds_each=0.2)
    source.open()
    form = source.read()
    reading = FormReader().read(form)
    assert reading.application_id is not None and reading.application_id.digits == DEMO_ID
    time.sleep(0.25)
    face = source.read()
    assert PhotoAnalyzer().analyse(face).passed
    source.close()
    with pytest.raises(CameraUnavailable):
        source.read()


def test_the_demo_id_is_a_valid_id_that_ordinary_files_do_not_hold() -> None:
    """A run of one digit (the old all-zero ID) is in images, logs and .git objects: a scan for
    it finds them, and a wipe that erased what held it would destroy them. Issue 15."""
    assert read_application_id(DEMO_ID).digits == DEMO_ID
    assert len(set(DEMO_ID)) >= 8
    assert not re.search(r"(.)\1\1", DEMO_ID), "no digit three times in a row"


def test_sources_are_chosen_by_the_config(tmp_path: Path) -> None:
    assert isinstance(source_from_config("demo", 1280, 720, 15), DemoSource)
    assert isinstance(source_from_config("v4l2:/dev/video0", 1280, 720, 15), V4L2Source)
    assert isinstance(source_from_config(f"images:{tmp_path}", 1280, 720, 15), ImageFolderSource)
    assert isinstance(source_from_config(f"video:{tmp_path}/a.mp4", 1280, 720, 15), VideoFileSource)
    config = load_config(write_config(tmp_path, '[capture]\nsource = "v4l2:/dev/video2"\n'))
    assert config.capture.source == "v4l2:/dev/video2"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[capture]\nsource = "webcam"\n', "capture.source"),
        ('[capture]\npreview_host = "0.0.0.0"\n', "capture.preview_host"),
        ("[capture]\nauto_capture_frames = 0\n", "capture.auto_capture_frames"),
    ],
)
def test_a_bad_capture_config_names_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write_config(tmp_path, body))
