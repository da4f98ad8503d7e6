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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldkit.wipe.markers import Marker
from fieldkit.wipe.record import EvidenceStore
from tests.devkit import DevKit
from tests.support.counter import Staff, new_application_id
from tests.support.kit_memory import applicant_markers, running_kit, scan_kit

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/mem").exists(), reason="needs /proc to read process memory"
)


@pytest.fixture
def dev_kit(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevKit]:
    with running_kit(tmp_path, runner={"scrub_freed_memory": request.param}) as kit:
        yield kit


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
        markers += applicant_markers(f"session-{n}", application_id, photo)
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
