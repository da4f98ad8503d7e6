"""The residue catalogue: every location's scanner finds a planted residue, every eraser
removes it, and with an eraser switched off the scan catches what it left. R6, R12, R30."""

from __future__ import annotations

import io
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldkit.capture import synthetic
from fieldkit.capture.appid import DEMO_ID
from fieldkit.config import DeviceConfig
from fieldkit.wipe.catalogue import Catalogue, read_ahead
from fieldkit.wipe.fragments import FRAGMENT_BYTES, FRAGMENTS, fragments_b64, photo_fragments
from fieldkit.wipe.markers import NOT_PERSONAL_IDS, MarkerSearch, daily_markers, session_markers
from tests.wipe_fixtures import APPLICATION_ID, OTHER_ID, SID, make_device, plant_everywhere

SECRET = APPLICATION_ID.encode()
REPO = Path(__file__).resolve().parent.parent
FILE_LOCATIONS = [
    "session-tmpfs", "browser-profile", "cups-spool", "cups-cache", "journald", "temp",
    "core-dumps", "broker-persistence", "outbox",
]  # fmt: skip
# Where the kit erases: only places that hold what the kit wrote. Everywhere else, a finding
# fails the record and nothing is removed.
ERASABLE = {"session-tmpfs", "browser-profile", "cups-spool", "core-dumps"}


def session_search() -> MarkerSearch:
    return MarkerSearch(session_markers(APPLICATION_ID, [], "canary-0123456789abcdef"))


# ---- the streaming search --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [5, 7, 16, 23, 64])
def test_a_marker_straddling_chunks_is_found_once_at_every_split(chunk: int) -> None:
    search = session_search()
    for position in range(0, 80):
        data = b"." * position + SECRET + b"." * 40
        hits, read = search.search_stream(io.BytesIO(data), chunk, 1 << 20)
        assert [(h.kind, h.offset) for h in hits] == [("application-id", position)], position
        assert read == len(data)


def test_utf16_and_canary_markers_are_found() -> None:
    search = session_search()
    data = b"\x00" * 3 + APPLICATION_ID.encode("utf-16-le") + b"canary-0123456789abcdef"
    kinds = sorted(h.kind for h in search.search_stream(io.BytesIO(data), 8, 1 << 20)[0])
    assert kinds == ["application-id-utf16", "canary"]


def test_the_daily_pattern_matches_23_digits_and_not_24_across_chunks() -> None:
    search = MarkerSearch(daily_markers())
    for chunk in (4, 9, 23, 50):
        found = search.search_stream(io.BytesIO(b"id " + OTHER_ID.encode() + b" end"), chunk, 999)
        assert [h.kind for h in found[0]] == ["application-id-pattern"]
        longer = search.search_stream(io.BytesIO(b"x" + b"1" * 24 + b"x"), chunk, 999)
        assert longer[0] == [], chunk
    utf16 = search.search_bytes(OTHER_ID.encode("utf-16-le"))
    assert [h.kind for h in utf16] == ["application-id-pattern-utf16"]


def test_a_large_file_read_ahead_by_a_thread_gives_the_same_hits(tmp_path: Path) -> None:
    """Files of more than a few chunks are read by a prefetching thread; nothing changes."""
    chunk = 4096
    data = bytearray(os.urandom(40 * chunk))
    planted = [chunk - 5, 7 * chunk - 11, 20 * chunk, len(data) - len(SECRET)]
    for offset in planted:
        data[offset : offset + len(SECRET)] = SECRET
        data[offset - 1 : offset] = b"x"  # a digit before it would make a longer run
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(data))
    search = MarkerSearch(session_markers(APPLICATION_ID, [], None) + daily_markers())
    expected, _ = search.search_stream(io.BytesIO(bytes(data)), chunk, 1 << 30)
    with path.open("rb", buffering=0) as stream:
        hits, read = search.search_stream(stream, chunk, 1 << 30)
    assert read == len(data)
    assert sorted((h.kind, h.offset) for h in hits) == sorted((h.kind, h.offset) for h in expected)
    assert {h.offset for h in hits if h.kind == "application-id"} == set(planted)
    # A limit stops the reader thread part way, and only what was read is searched.
    with path.open("rb", buffering=0) as stream:
        hits, read = search.search_stream(stream, chunk, 10 * chunk)
    assert read == 10 * chunk
    assert {h.offset for h in hits if h.kind == "application-id"} == set(planted[:2])


def test_reading_ahead_hands_out_every_file_once_in_order(tmp_path: Path) -> None:
    """The advice for the next file changes nothing the scan sees: same files, same order; a
    file that vanishes or cannot be opened is passed on for the scan to judge."""
    paths = []
    for index in range(5):
        path = tmp_path / f"f{index}"
        path.write_bytes(os.urandom(100))
        paths.append(path)
    paths.insert(2, tmp_path / "gone")  # never existed: the advice on it fails quietly
    os.mkfifo(tmp_path / "fifo")
    paths.insert(4, tmp_path / "fifo")  # would block a plain open; O_NONBLOCK does not
    assert list(read_ahead(iter(paths), 1 << 20)) == paths
    assert list(read_ahead(iter([]), 1 << 20)) == []


def test_photo_fragments_come_from_the_compressed_data_and_are_found() -> None:
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(50) + b"\xff\xda" + os.urandom(5000)
    fragments = photo_fragments(jpeg)
    assert len(fragments) == 3 and all(len(f) == 48 for f in fragments)
    assert len(fragments_b64(jpeg)) == 3
    search = MarkerSearch(session_markers(None, fragments, None))
    assert {h.kind for h in search.search_bytes(b"junk" + jpeg)} == {"photo"}
    assert search.search_bytes(os.urandom(5000)) == []


def plain_jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(encoded.tobytes())


def fixed_slices(jpeg: bytes) -> list[bytes]:
    """Where fragments were taken before: three fixed positions in the compressed data."""
    body = jpeg[jpeg.rfind(b"\xff\xda") + 16 : len(jpeg) - 2]
    step = len(body) // 4
    return [body[step * i : step * i + FRAGMENT_BYTES] for i in (1, 2, 3)]


def test_photo_fragments_of_a_plain_rendered_photo_are_varied_and_its_own() -> None:
    """A drawn face on a plain backdrop compresses to runs of a few bytes there; a slice taken
    at a fixed position in such a run is in every photo with that backdrop, so it would find
    (and once deleted) other applicants' files. Fragments are taken where the bytes vary."""
    face = plain_jpeg(synthetic.demo_face((640, 480)))
    other = plain_jpeg(synthetic.demo_face((800, 600)))  # another photo, the same backdrop
    uniform = [s for s in fixed_slices(face) if len(set(s)) < 8]
    assert uniform, "the fixed positions would have given a uniform marker"
    assert any(s in other for s in uniform)
    fragments = photo_fragments(face)
    assert len(fragments) == FRAGMENTS
    for fragment in fragments:
        assert len(fragment) == FRAGMENT_BYTES and fragment in face
        assert len(set(fragment)) >= 32 and fragment not in other
        assert max(len(list(run)) for _, run in itertools.groupby(fragment)) <= 3
    assert MarkerSearch(session_markers(None, fragments, None)).search_bytes(other) == []
    # A photo with nothing varied in it gives no fragment rather than a uniform one.
    assert photo_fragments(plain_jpeg(np.full((480, 640, 3), 128, np.uint8))) == []


def test_a_marker_that_is_a_run_of_one_byte_is_never_used() -> None:
    periodic = b"\xa2\x8a\x28\x00" * 12  # a flat area's code, found in the photo above
    uniform = session_markers("0" * 23, [bytes(FRAGMENT_BYTES), periodic], "a" * 20)
    assert uniform == []
    canary = "canary-0123456789abcdef"
    varied = session_markers(APPLICATION_ID, [os.urandom(FRAGMENT_BYTES)], canary)
    assert sorted(m.kind for m in varied) == [
        "application-id", "application-id-grouped", "application-id-grouped-utf16",
        "application-id-utf16", "canary", "canary-utf16", "photo",
    ]  # fmt: skip


def test_the_demo_id_is_neither_a_session_marker_nor_a_daily_finding() -> None:
    """The demo camera's ID sits in the code and in every process that imports it: finding it
    says nothing about an applicant. Any other 23 digits still are a finding."""
    assert [m.kind for m in session_markers(DEMO_ID, [], None)] == []
    data = b"a " + DEMO_ID.encode() + b" b " + DEMO_ID.encode("utf-16-le") + b" c "
    for chunk in (4, 9, 23, 64):
        hits, _ = MarkerSearch(daily_markers()).search_stream(io.BytesIO(data), chunk, 1 << 20)
        assert hits == [], chunk
        with_other = data + OTHER_ID.encode()
        hits, _ = MarkerSearch(daily_markers()).search_stream(io.BytesIO(with_other), chunk, 999)
        assert [h.kind for h in hits] == ["application-id-pattern"]
    # Without the exclusion the same data is two findings: the exclusion is what clears it.
    unexcluded = MarkerSearch(daily_markers(not_personal=())).search_bytes(data)
    assert sorted(h.kind for h in unexcluded) == [
        "application-id-pattern", "application-id-pattern-utf16",
    ]  # fmt: skip
    assert DEMO_ID in NOT_PERSONAL_IDS


# ---- locations -------------------------------------------------------------------------------


def test_every_location_finds_its_planted_residue(tmp_path: Path) -> None:
    """100 % of the file locations: a planted residue is found where it was planted."""
    config, root, _ = make_device(tmp_path)
    catalogue = Catalogue.from_settings(config.wipe)
    planted = plant_everywhere(root, SID, SECRET)
    search = session_search()
    for location in catalogue.locations:
        if location.name not in FILE_LOCATIONS:
            continue
        result = catalogue.scan(location, search)
        assert result.status == "residue", location.name
        assert str(planted[location.name]) in {f.where for f in result.findings}
        assert APPLICATION_ID not in result.model_dump_json()
    assert set(FILE_LOCATIONS) == set(planted)


def test_the_erasers_remove_what_they_own_and_scan_only_places_stay_visible(
    tmp_path: Path,
) -> None:
    config, root, _ = make_device(tmp_path)
    catalogue = Catalogue.from_settings(config.wipe)
    planted = plant_everywhere(root, SID, SECRET)
    innocent = root / "tmp" / "unrelated.txt"
    innocent.write_bytes(b"nothing personal")
    temp_copy = planted["temp"].read_bytes()
    search = session_search()
    for location in catalogue.locations:
        if location.name not in FILE_LOCATIONS:
            continue
        result = catalogue.erase(location, SID, search)
        if location.name in ERASABLE:
            assert result.status == "clean" and not result.fails, location.name
            assert result.erased >= 1
            assert not planted[location.name].exists()
        else:
            assert result.status == "residue" and result.fails, location.name
            assert result.erased == 0 and result.action == "scanned only"
    # A temporary folder is not the kit's alone: the file holding the marker is a finding that
    # fails the record, and it is left as it was, like every other file there.
    assert planted["temp"].read_bytes() == temp_copy
    assert innocent.read_bytes() == b"nothing personal"
    assert not (root / "run-session" / SID).exists()
    assert (root / "profile").is_dir() and not any((root / "profile").iterdir())


@pytest.mark.parametrize("name", sorted(ERASABLE))
def test_with_an_eraser_switched_off_the_scan_catches_what_it_left(
    tmp_path: Path, name: str
) -> None:
    """The checks can fail: each eraser off in turn, its residue is reported."""
    config, root, _ = make_device(tmp_path)
    catalogue = Catalogue.from_settings(config.wipe).without(name)
    planted = plant_everywhere(root, SID, SECRET)
    (location,) = [loc for loc in catalogue.locations if loc.name == name]
    result = catalogue.erase(location, SID, session_search())
    assert result.status == "residue" and result.fails
    assert planted[name].exists()


def test_only_the_session_folder_of_the_wiped_session_goes(tmp_path: Path) -> None:
    config, root, _ = make_device(tmp_path)
    other = root / "run-session" / ("0" * 32)
    other.mkdir()
    (other / "keep").write_bytes(b"another session's file")
    plant_everywhere(root, SID, SECRET)
    catalogue = Catalogue.from_settings(config.wipe)
    catalogue.erase(catalogue.locations[0], SID, session_search())
    assert (other / "keep").exists() and not (root / "run-session" / SID).exists()


def test_a_file_named_after_the_applicant_is_found_and_its_name_not_shown(
    tmp_path: Path,
) -> None:
    config, root, _ = make_device(tmp_path)
    (root / "tmp" / f"{APPLICATION_ID}.pdf").write_bytes(b"no content marker")
    catalogue = Catalogue.from_settings(config.wipe).without("temp")
    (temp,) = [loc for loc in catalogue.locations if loc.name == "temp"]
    result = catalogue.scan(temp, session_search())
    assert [f.kind for f in result.findings] == ["name:application-id"]
    assert APPLICATION_ID not in result.model_dump_json()


def test_symlinks_are_not_followed_out_of_a_location(tmp_path: Path) -> None:
    config, root, _ = make_device(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(SECRET)
    (root / "profile" / "link").symlink_to(outside)
    catalogue = Catalogue.from_settings(config.wipe)
    catalogue.erase(catalogue.locations[1], SID, session_search())
    assert outside.read_bytes() == SECRET


def test_swap_is_reported_present_or_absent(tmp_path: Path) -> None:
    config, root, _ = make_device(tmp_path)
    catalogue = Catalogue.from_settings(config.wipe)
    (swap,) = [loc for loc in catalogue.locations if loc.name == "swap"]
    assert catalogue.scan(swap, session_search()).status == "absent"
    (root / "swaps").write_text(
        "Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n"
    )
    result = catalogue.scan(swap, session_search())
    assert result.status == "present" and result.fails


HOLDER_PROCESS = """
import signal, sys, time
held = bytearray(sys.argv[2].encode())
def forget(signum, frame):
    held[:] = bytes(len(held))
signal.signal(signal.SIGUSR1, forget)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_service_memory_is_scanned_and_zeroing_makes_it_clean(tmp_path: Path) -> None:
    """A process that holds the ID is caught; after it zeroes its buffer the scan is clean."""
    config, _, tag = make_device(tmp_path)
    catalogue = Catalogue.from_settings(config.wipe)
    (memory,) = [loc for loc in catalogue.locations if loc.name == "service-memory"]
    # The ID reaches the child only in halves joined inside the one buffer, so no other copy
    # of it (argv, a temporary str) is left in the child's memory to find after zeroing.
    half = len(APPLICATION_ID) // 2
    code = HOLDER_PROCESS.replace(
        "bytearray(sys.argv[2].encode())",
        f"bytearray(sys.argv[2].encode()); held += {APPLICATION_ID[half:]!r}.encode()",
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, tag, APPLICATION_ID[:half]], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        before = catalogue.scan(memory, session_search())
        assert before.status == "residue" and before.fails
        where = f"pid:{child.pid} ({Path(sys.executable).name[:15]})"
        assert {f.where for f in before.findings} == {where}
        assert before.holders == {where: 1} and before.finding_count == 1
        child.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        after = catalogue.scan(memory, session_search())
        assert after.status == "clean", after.findings
        assert after.scanned_files == 1 and after.scanned_bytes > 0
    finally:
        child.kill()
        child.wait()


REFERENCE = {
    "application-id-pattern": re.compile(rb"(?<![0-9])[0-9]{23}(?![0-9])"),
    "application-id-pattern-utf16": re.compile(rb"(?<![0-9]\x00)(?:[0-9]\x00){23}(?![0-9]\x00)"),
    "jpeg": re.compile(rb"\xff\xd8\xff(?:\xe0..JFIF\x00|\xe1..Exif\x00\x00)", re.DOTALL),
}


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(
            [b"1", b"12345", b"0" * 23, b"9" * 22, b"x", b"\x00", b"4\x00" * 23, b"7\x00",
             b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00",
             b"\xff\xd8\xff", b"\xff", b"\xd8", b"\xe0", b"JFIF\x00"]
        ),
        max_size=40,
    ),
    chunk=st.integers(min_value=1, max_value=70),
)  # fmt: skip
def test_the_fast_daily_finders_agree_with_regular_expressions(
    pieces: list[bytes], chunk: int
) -> None:
    """The memory-speed finders find exactly what the slow, obvious expressions find."""
    data = b"".join(pieces)
    expected = sorted(
        (kind, m.start()) for kind, expr in REFERENCE.items() for m in expr.finditer(data)
    )
    hits, _ = MarkerSearch(daily_markers()).search_stream(io.BytesIO(data), chunk, 1 << 20)
    assert sorted((h.kind, h.offset) for h in hits) == expected


def test_a_scan_interrupted_by_the_service_stopping_is_reported_not_clean(tmp_path: Path) -> None:
    config, root, _ = make_device(tmp_path)
    (root / "tmp" / "a").write_bytes(b"harmless")
    catalogue = Catalogue.from_settings(config.wipe)
    (temp,) = [loc for loc in catalogue.locations if loc.name == "temp"]
    assert catalogue.scan(temp, session_search()).status == "clean"
    catalogue.stopping.set()
    result = catalogue.scan(temp, session_search())
    assert result.fails and "interrupted" in result.note


def test_the_default_catalogue_covers_where_the_kit_puts_session_data() -> None:
    """With every default, the kiosk's session folders, sync's outbox and the image's browser
    profile and cache are places the wipe erases or scans, and the browser unit it restarts is
    the image's. A path that drifts apart would never be wiped, and a missing location passes
    as absent: this is what keeps them together."""
    from pathlib import PurePosixPath

    from fieldkit.policies import load_policies
    from tests.support.paths import REPO_POLICIES

    config = DeviceConfig(device={"id": "tab-01", "role": "tablet"})
    wipe = config.wipe
    assert (config.kiosk.session_dir or config.bus.runtime_dir / "sessions") in wipe.session_dirs
    assert config.sync.outbox.parent in wipe.outbox_dirs
    tmpfs = {m.path for m in load_policies(REPO_POLICIES).erasure.tmpfs}
    browser = {wipe.browser_profile, wipe.browser_cache}
    assert {PurePosixPath(p) for p in browser if p is not None} <= tmpfs
    unit = "fieldkit-kiosk-browser.service"
    assert (REPO / "ansible/roles/kiosk/templates" / f"{unit}.j2").is_file()
    assert wipe.browser_stop[-1] == unit and wipe.browser_start[-1] == unit
    # The broker the runner starts is the one whose memory is scanned with the services'.
    assert kit_broker_config(config) in wipe.broker_configs


def kit_broker_config(config: DeviceConfig) -> Path:
    from fieldkit.broker import LocalBroker
    from fieldkit.bus import Endpoint

    return LocalBroker(config.bus.runtime_dir, [], Endpoint(port=1)).config_file


def test_the_development_kit_erases_and_scans_its_own_folders_not_the_developers() -> None:
    """./dev.sh run: every place the wipe erases in, and the temp folders it scans, are under
    the checkout's var/; none is the developer's /tmp. Issue 15."""
    from fieldkit.config import load_config

    config = load_config(REPO / "etc" / "dev-tablet.toml")
    catalogue = Catalogue.from_settings(config.wipe)
    for place in catalogue.locations:
        if place.erase != "none" or place.name == "temp":
            assert place.roots and all(p.parts[0] == "var" for p in place.roots), place.name
    assert 'TMPDIR="$PWD/var/tmp"' in (REPO / "dev.sh").read_text()
    assert config.wipe.journal_dirs == []
    assert config.wipe.broker_configs == [kit_broker_config(config)]
