"""The development kit as `./dev.sh run` starts it (``tests/devkit.py``), in a checkout-like
folder, and a scan of every kit process's writable memory for an applicant's markers."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fieldkit.capture.appid import grouped
from fieldkit.wipe.catalogue import scan_process
from fieldkit.wipe.markers import Marker, MarkerSearch, literal
from tests.devkit import DevKit
from tests.support.counter import show_camera

# The printer stand-in is the paper the kit prints on, not part of the tablet.
NOT_THE_KIT = {"ippeveprinter"}


@contextlib.contextmanager
def running_kit(
    tmp_path: Path,
    runner: Mapping[str, Any] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[DevKit]:
    """`fieldkit up` on the development config, nobody in front of its camera yet."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    # A checkout's folder: cupsd's filters (user lp) must reach the printer's spool in it,
    # which pytest's private tmp_path does not allow.
    base = Path(tempfile.mkdtemp(prefix="fieldkit-devkit-"))
    base.chmod(0o755)
    kit = DevKit(base / "kit", scenes / "camera.png", runner=runner, settings=settings)
    show_camera(kit.camera, nobody())
    try:
        kit.start()
        urllib.request.urlopen(f"{kit.base}/login", timeout=30).close()  # noqa: S310 - loopback
        yield kit
    finally:
        kit.stop()
        if not os.environ.get("FIELDKIT_KEEP_DEVKIT"):
            shutil.rmtree(base, ignore_errors=True)


def nobody() -> np.ndarray:  # type: ignore[type-arg]
    """An empty scene: no QR code to read, no face to take."""
    return np.full((720, 1280, 3), 200, dtype=np.uint8)


def photo_needles(jpeg: bytes) -> list[bytes]:
    """Slices of the photo's compressed data, raw and as the bus carries it (base64)."""
    start = jpeg.rfind(b"\xff\xda") + 16
    body = jpeg[start:-2]
    step = len(body) // 5
    raw = [body[step * i : step * i + 48] for i in range(1, 5)]
    encoded = base64.b64encode(jpeg)
    b64_step = (len(encoded) // 5) // 4 * 4
    return raw + [encoded[b64_step * i : b64_step * i + 64] for i in range(1, 5)]


def applicant_markers(label: str, application_id: str, photo: bytes) -> list[Marker]:
    """What finds one applicant in memory: the ID (ASCII and UTF-16; bare, and in the groups
    the review page shows it in) and slices of the photo."""
    shown = grouped(application_id)
    return [
        literal(f"{label}-id", application_id.encode("ascii")),
        literal(f"{label}-id-utf16", application_id.encode("utf-16-le")),
        literal(f"{label}-id-grouped", shown.encode("ascii")),
        literal(f"{label}-id-grouped-utf16", shown.encode("utf-16-le")),
        *(literal(f"{label}-photo", needle) for needle in photo_needles(photo)),
    ]


def scan_kit(kit: DevKit, markers: list[Marker]) -> dict[str, int]:
    """Hits per process ("comm pid") in the writable memory of every process of the kit."""
    search = MarkerSearch(markers)
    found: Counter[str] = Counter()
    scanned = 0
    for pid, name in kit.processes().items():
        if name in NOT_THE_KIT:
            continue
        try:
            hits, _, _ = scan_process(pid, search, 1 << 20)
        except OSError:
            continue  # exited meanwhile
        scanned += 1
        for hit in hits:
            found[f"{name} {pid} {hit.kind}"] += 1
    assert scanned >= 8, "the kit's processes were not found"
    return dict(found)
