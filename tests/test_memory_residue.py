"""Erasure that holds in memory: after the wipes, no kit process and not the broker keeps any
applicant's ID or photo. R6 R12 R23 (issue 15, architecture §3-4)

The kit runs as `./dev.sh run` starts it (``tests/devkit.py``: `fieldkit up` on a copy of
``etc/dev-tablet.toml``: the supervisor, the local mosquitto, the kiosk under gunicorn, capture,
printing with its own cupsd, sync, wipe, antivirus). Staff run several applicant sessions in
Chromium, each with its own application ID (the form's QR in front of the camera) and its own
photo; each ends with the kiosk's wipe, whose record must pass. Then the writable memory of
every process of the kit (``/proc/PID/mem``; the printer stand-in ippeveprinter excepted: it is
the paper) is read for every session's ID (ASCII and UTF-16) and for slices of every photo
(raw and base64).

With the protection on (the runner's default: freed memory overwritten, see
``fieldkit.processes``) nothing is found. With it switched off (``[runner]
scrub_freed_memory = false``) the same scan finds the sessions in the processes' memory: the
check sees what it is there to see.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fieldkit.wipe.catalogue import scan_process
from fieldkit.wipe.markers import Marker, MarkerSearch, literal
from fieldkit.wipe.record import EvidenceStore
from tests.devkit import DevKit
from tests.support.counter import Staff, new_application_id, show_camera

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/mem").exists(), reason="needs /proc to read process memory"
)
# The printer stand-in is the paper the kit prints on, not part of the tablet.
NOT_THE_KIT = {"ippeveprinter"}


def photo_needles(jpeg: bytes) -> list[bytes]:
    """Slices of the photo's compressed data, raw and as the bus carries it (base64)."""
    start = jpeg.rfind(b"\xff\xda") + 16
    body = jpeg[start:-2]
    step = len(body) // 5
    raw = [body[step * i : step * i + 48] for i in range(1, 5)]
    encoded = base64.b64encode(jpeg)
    b64_step = (len(encoded) // 5) // 4 * 4
    return raw + [encoded[b64_step * i : b64_step * i + 64] for i in range(1, 5)]


@pytest.fixture
def dev_kit(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevKit]:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    # A checkout's folder: cupsd's filters (user lp) must reach the printer's spool in it,
    # which pytest's private tmp_path does not allow.
    base = Path(tempfile.mkdtemp(prefix="fieldkit-devkit-"))
    base.chmod(0o755)
    kit = DevKit(base / "kit", scenes / "camera.png", runner={"scrub_freed_memory": request.param})
    show_camera(kit.camera, np.full((720, 1280, 3), 200, dtype=np.uint8))
    try:
        kit.start()
        urllib.request.urlopen(f"{kit.base}/login", timeout=30).close()  # noqa: S310 - loopback
        yield kit
    finally:
        kit.stop()
        if not os.environ.get("FIELDKIT_KEEP_DEVKIT"):
            shutil.rmtree(base, ignore_errors=True)


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


@pytest.mark.parametrize(
    ("dev_kit", "sessions"),
    [pytest.param(True, 3, id="protection-on"), pytest.param(False, 1, id="protection-off")],
    indirect=["dev_kit"],
)
def test_no_process_of_the_kit_keeps_an_applicant_after_the_wipes(
    dev_kit: DevKit,
    sessions: int,
    browser: Any,
) -> None:
    staff = Staff(browser, dev_kit.base)
    markers: list[Marker] = []
    for n in range(sessions):
        application_id = new_application_id()
        photo = staff.session(dev_kit.camera, application_id, seed=n + 1)
        markers += [
            literal(f"session-{n}-id", application_id.encode("ascii")),
            literal(f"session-{n}-id-utf16", application_id.encode("utf-16-le")),
            *(literal(f"session-{n}-photo", needle) for needle in photo_needles(photo)),
        ]
        del application_id, photo
    staff.context.close()
    # Every session's wipe passed (the record is the kit's own verdict).
    store = EvidenceStore(dev_kit.root / "var" / "wipe" / "evidence.sqlite")
    try:
        records = [r for _, r in store.records() if r.kind == "session"]
    finally:
        store.close()
    assert len(records) == sessions
    found = scan_kit(dev_kit, markers)
    if dev_kit.scrub:
        assert all(r.ok for r in records), [r.failures for r in records]
        assert found == {}
    else:
        # Switched off, the same scan finds the applicants in the kit's memory.
        assert found, "the scan found nothing with the protection off: it proves nothing"
