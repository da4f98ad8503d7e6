"""The residue scanners stay in bounds: they never leave a location's filesystem, never read
what is not a regular file, stop when their time is up and say what they left unscanned, count
every finding, and read the kit's broker with its services. Issue 15 (R6, R12, R30)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fieldkit.broker import LocalBroker
from fieldkit.bus import Endpoint, read_password
from fieldkit.wipe import catalogue as catalogue_module
from fieldkit.wipe.catalogue import MAX_FINDINGS, MAX_HOLDERS, Catalogue, Location
from fieldkit.wipe.markers import MarkerSearch, session_markers
from fieldkit.wipe.record import LocationResult, failures_of
from fieldkit.wipe.settings import WipeSection
from tests.conftest import TESTER
from tests.wipe_fixtures import APPLICATION_ID, SID, make_device

SECRET = APPLICATION_ID.encode()
T = TypeVar("T")
COMM = Path(sys.executable).name[:15]  # what /proc/<pid>/comm says for a Python child


def search() -> MarkerSearch:
    return MarkerSearch(session_markers(APPLICATION_ID, [], None))


def location(catalogue: Catalogue, name: str) -> Location:
    (found,) = [loc for loc in catalogue.locations if loc.name == name]
    return found


def catalogue_for(tmp_path: Path, **settings: object) -> tuple[Catalogue, Path]:
    config, root, _ = make_device(tmp_path)
    return Catalogue.from_settings(config.wipe.model_copy(update=settings)), root


def in_time(work: Callable[[], T], seconds: float = 30) -> T:
    """The result of ``work``, or a failure (not a hung test run) if it blocks."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(work).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


@contextlib.contextmanager
def mounted(kind: str, target: Path) -> Iterator[Path]:
    target.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", kind, kind, str(target)], capture_output=True)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()
        pytest.skip(f"cannot mount {kind} here ({reason}): these tests need root")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


# ---- one filesystem ---------------------------------------------------------------------------


def test_a_proc_mount_in_a_scanned_folder_is_not_entered(tmp_path: Path) -> None:
    """A proc filesystem mounted under a temp folder (an image build) once made the scan block
    for ever reading .../proc/kmsg. The walk stays on the folder's filesystem."""
    catalogue, root = catalogue_for(tmp_path)
    (root / "var-tmp" / "own.txt").write_bytes(b"harmless")
    with mounted("proc", root / "var-tmp" / "build" / "proc") as proc:
        kmsg = (proc / "kmsg").lstat()
        # What a walk that crossed filesystems would meet: a "regular file" that blocks a read.
        assert stat.S_ISREG(kmsg.st_mode) and kmsg.st_dev != (root / "var-tmp").stat().st_dev
        result = in_time(lambda: catalogue.scan(location(catalogue, "temp"), search()))
    assert result.status == "clean" and not result.fails
    assert result.scanned_files == 1
    assert "skipped 1 mount points" in result.note


def test_a_tmpfs_inside_a_location_is_left_out_by_mountinfo_and_by_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount is passed by without a stat when mountinfo names it (a hung FUSE daemon never
    answers one); when it does not, the device number still keeps the walk out."""
    catalogue, root = catalogue_for(tmp_path)
    temp = location(catalogue, "temp")
    plain = root / "var-tmp" / "plain"
    plain.mkdir()
    (plain / "copy.txt").write_bytes(SECRET)
    with mounted("tmpfs", root / "var-tmp" / "mnt") as mnt:
        (mnt / "copy.txt").write_bytes(SECRET)
        result = catalogue.scan(temp, search())
        # The same file in a plain folder is found: the scan would find it if it went in.
        assert result.holders == {str(plain / "copy.txt"): 1}
        assert "skipped 1 mount points" in result.note
        monkeypatch.setattr(catalogue_module, "mount_points", frozenset)
        again = catalogue.scan(temp, search())
        assert again.holders == result.holders and "skipped 1 mount points" in again.note


@contextlib.contextmanager
def hung_fuse(target: Path) -> Iterator[Path]:
    """A FUSE mount whose daemon never answers: a stat of it waits until the daemon's end of
    /dev/fuse is closed, which this does on the way out (the waiting calls then fail)."""
    target.mkdir(parents=True)
    try:
        daemon = os.open("/dev/fuse", os.O_RDWR)
    except OSError as exc:
        pytest.skip(f"no /dev/fuse here ({exc.strerror})")
    try:
        options = f"fd={daemon},rootmode=40000,user_id=0,group_id=0"
        done = subprocess.run(
            ["mount", "-t", "fuse", "-o", options, "hung", str(target)],
            pass_fds=(daemon,),
            capture_output=True,
            timeout=10,
        )
        if done.returncode != 0:
            reason = done.stderr.decode(errors="replace").strip()
            pytest.skip(f"cannot mount FUSE here ({reason}): these tests need root")
        yield target
    finally:
        os.close(daemon)
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_hung_fuse_mount_in_a_scanned_folder_is_passed_without_a_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stat of a FUSE mount whose daemon hangs never returns; mountinfo names the mount,
    so the walk passes it by. By device number alone it would have to stat it, and wait."""
    catalogue, root = catalogue_for(tmp_path)
    temp = location(catalogue, "temp")
    (root / "var-tmp" / "own.txt").write_bytes(b"harmless")
    waiting: list[LocationResult] = []
    with hung_fuse(root / "var-tmp" / "fuse"):
        result = in_time(lambda: catalogue.scan(temp, search()))
        assert result.status == "clean" and "skipped 1 mount points" in result.note
        monkeypatch.setattr(catalogue_module, "mount_points", frozenset)
        scan = threading.Thread(target=lambda: waiting.append(catalogue.scan(temp, search())))
        scan.start()
        scan.join(1.0)
        assert scan.is_alive() and not waiting  # blocked in the stat
    scan.join(10)  # the daemon's end closed: the stat fails and the scan ends
    assert waiting


def test_the_erasers_do_not_cross_into_a_mount_inside_their_location(tmp_path: Path) -> None:
    catalogue, root = catalogue_for(tmp_path)
    profile = root / "profile"
    (profile / "Default").mkdir()
    (profile / "Default" / "Cookies").write_bytes(SECRET)
    with mounted("tmpfs", profile / "mnt") as mnt:
        (mnt / "not-the-profile.txt").write_bytes(b"someone else's")
        result = catalogue.erase(location(catalogue, "browser-profile"), SID, search())
        assert (mnt / "not-the-profile.txt").read_bytes() == b"someone else's"
    assert result.erased == 1 and not (profile / "Default" / "Cookies").exists()
    assert "skipped 1 mount points" in result.note


# ---- only regular files, never a blocking open -------------------------------------------------


def test_a_fifo_in_a_scanned_folder_does_not_block_the_scan(tmp_path: Path) -> None:
    catalogue, root = catalogue_for(tmp_path)
    fifo = root / "var-tmp" / "pipe"
    os.mkfifo(fifo)
    copy = root / "var-tmp" / "copy.txt"
    copy.write_bytes(SECRET)
    # A plain open of the fifo waits for a writer: the protection is needed.
    reader = threading.Thread(target=lambda: open(fifo, "rb").close(), daemon=True)
    reader.start()
    reader.join(0.5)
    assert reader.is_alive()
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the writer that lets it go
    reader.join(5)
    result = in_time(lambda: catalogue.scan(location(catalogue, "temp"), search()))
    assert result.status == "residue" and result.holders == {str(copy): 1}


def test_what_is_swapped_in_after_the_walk_is_not_read(tmp_path: Path) -> None:
    """Between the walk's lstat and the open a file may become a fifo or a symlink: the open
    neither blocks nor follows, and what it opened is checked before a byte is read."""
    catalogue, root = catalogue_for(tmp_path)
    folder = root / "var-tmp"
    device = folder.stat().st_dev
    deadline = time.monotonic() + 30
    regular = folder / "regular"
    regular.write_bytes(SECRET)
    hits, _, state = catalogue.scan_file(regular, device, search(), deadline)
    assert state == "scanned" and len(hits) == 1  # the check can find what it looks for
    os.mkfifo(folder / "fifo")
    (folder / "link").symlink_to(regular)
    for name in ("fifo", "link"):
        hits, read, state = in_time(
            lambda n=name: catalogue.scan_file(folder / n, device, search(), deadline)
        )
        assert (hits, read, state) == ([], 0, "not-regular"), name
    # A regular file of another filesystem (a bind mount of one file) is not read either.
    hits, read, state = catalogue.scan_file(regular, device + 1, search(), deadline)
    assert (hits, read, state) == ([], 0, "not-regular")


# ---- a time budget per location ------------------------------------------------------------------


def test_a_scan_out_of_time_fails_the_location_and_counts_what_it_left(tmp_path: Path) -> None:
    catalogue, root = catalogue_for(tmp_path)
    temp = location(catalogue, "temp")
    tree = root / "var-tmp" / "tree"
    for branch in range(50):
        (tree / f"b{branch}").mkdir(parents=True)
        for leaf in range(100):
            (tree / f"b{branch}" / f"f{leaf}").write_bytes(b"x" * 512)
    full = catalogue.scan(temp, search())
    assert full.status == "clean" and full.scanned_files == 5000 and full.note == ""
    short = catalogue.scan(temp, search(), budget=0.02)
    assert short.status == "incomplete" and short.fails
    note = r"scan stopped after 0.02 s: (at least )?(\d+) files not scanned"
    match = re.fullmatch(note, short.note)
    assert match is not None, short.note
    # Counting what is left has its own half second: on a loaded machine it may stop short.
    left = short.scanned_files + int(match.group(2))
    assert left == 5000 if match.group(1) is None else left <= 5000
    assert failures_of([], [short]) == ["temp: incomplete (0 found)"]


def test_a_file_cut_short_by_the_budget_is_not_scanned(tmp_path: Path) -> None:
    catalogue, root = catalogue_for(tmp_path)
    big = root / "var-tmp" / "big.bin"
    big.write_bytes(os.urandom(32 << 20))
    result = catalogue.scan(location(catalogue, "temp"), search(), budget=0.01)
    assert result.status == "incomplete" and result.fails
    assert result.note == "scan stopped after 0.01 s: 1 files not scanned"
    assert result.scanned_bytes < big.stat().st_size


def test_the_session_wipe_has_its_own_much_smaller_budget(tmp_path: Path) -> None:
    catalogue, root = catalogue_for(
        tmp_path, location_budget_seconds=30.0, session_location_budget_seconds=0.001
    )
    for index in range(2000):
        (root / "var-tmp" / f"f{index}").write_bytes(b"x")
    temp = location(catalogue, "temp")
    assert catalogue.scan(temp, search()).status == "clean"  # the daily budget suffices
    erased = catalogue.erase(temp, SID, search())
    assert erased.status == "incomplete" and erased.fails
    assert erased.note.startswith("scan stopped after 0.001 s:")


def test_the_budgets_default_to_a_daily_scan_and_a_session_wipe() -> None:
    settings = WipeSection()
    assert settings.location_budget_seconds == 20.0
    assert settings.session_location_budget_seconds == 2.0


HOLDER = """
import sys, time
held = bytearray(sys.argv[2].encode()) + bytearray(sys.argv[3].encode())
print("ready", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def process_holding(tag: str) -> Iterator[subprocess.Popen[bytes]]:
    half = len(APPLICATION_ID) // 2
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, tag, APPLICATION_ID[:half], APPLICATION_ID[half:]],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        yield child
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_a_memory_scan_out_of_time_fails_and_says_how_many_processes_it_left(
    tmp_path: Path,
) -> None:
    config, _, tag = make_device(tmp_path)
    catalogue = Catalogue.from_settings(config.wipe)
    memory = location(catalogue, "service-memory")
    with process_holding(tag) as child:
        found = catalogue.scan(memory, search())
        assert found.status == "residue" and found.holders == {f"pid:{child.pid} ({COMM})": 1}
        short = catalogue.scan(memory, search(), budget=1e-6)
    assert short.status == "incomplete" and short.fails
    assert short.note == "1 processes; scan stopped after 1e-06 s: 1 processes not scanned"


# ---- counts, not a cap ---------------------------------------------------------------------------


def test_every_finding_is_counted_and_every_holder_named_however_many(tmp_path: Path) -> None:
    """A cap of 50 findings once hid the worst holder. The list stays bounded, the counts
    do not, and the places holding most come first."""
    catalogue, root = catalogue_for(tmp_path)
    many = root / "var-tmp" / "many.bin"
    many.write_bytes((SECRET + b"x") * 120)
    few = root / "tmp" / "few.bin"
    few.write_bytes(SECRET)
    result = catalogue.scan(location(catalogue, "temp"), search())
    assert result.finding_count == 121 and result.holder_count == 2
    assert list(result.holders or {}) == [str(many), str(few)]
    assert result.holders == {str(many): 120, str(few): 1}
    # The bounded list alone would not show the second place at all.
    assert len(result.findings) == MAX_FINDINGS
    assert str(few) not in {f.where for f in result.findings}
    assert failures_of([], [result]) == ["temp: residue (121 found)"]


def test_the_places_named_are_bounded_and_their_number_is_not(tmp_path: Path) -> None:
    catalogue, root = catalogue_for(tmp_path)
    for index in range(MAX_HOLDERS + 20):
        (root / "var-tmp" / f"copy-{index:03d}").write_bytes(SECRET)
    result = catalogue.scan(location(catalogue, "temp"), search())
    assert result.holder_count == MAX_HOLDERS + 20 == result.finding_count
    assert len(result.holders or {}) == MAX_HOLDERS


def test_a_record_sealed_before_the_counts_existed_hashes_the_same() -> None:
    """Unset counts are left out of the JSON a record's hash covers, so an earlier record
    read by this version still verifies."""
    before = {"v", "type", "name", "status", "erased", "action", "scanned_files"}
    before |= {"scanned_bytes", "findings", "note", "fails"}
    old = LocationResult(name="temp", status="clean")
    assert set(old.model_dump(mode="json")) == before
    assert LocationResult.model_validate_json(old.model_dump_json()) == old
    new = LocationResult(name="temp", status="clean", finding_count=0, holders={}, holder_count=0)
    assert set(new.model_dump(mode="json")) == before | {"finding_count", "holders", "holder_count"}


# ---- the kit's broker ----------------------------------------------------------------------------


def publish_retained(broker: LocalBroker, payload: bytes) -> None:
    """A retained message: mosquitto keeps it in its heap, as it kept applicants' data."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="scan-bounds-tester")
    client.username_pw_set("tester", read_password(broker.runtime_dir, "tester"))
    client.connect(broker.endpoint.host, broker.endpoint.port)
    client.loop_start()
    try:
        client.publish("tester/req/x/held", payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_the_memory_scan_covers_the_kits_broker_and_no_other_mosquitto(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """The broker's command line holds no "fieldkit": it is known by the config file the kit
    wrote for it. Another mosquitto on the machine is not the kit's and is not read."""
    assert broker.process is not None
    other_dir = tmp_path / "other-run"
    other_dir.mkdir()
    with LocalBroker(other_dir, [TESTER], Endpoint(port=0)) as other:
        assert other.process is not None
        for running in (broker, other):
            publish_retained(running, b"application " + SECRET)
        config, _, _ = make_device(tmp_path)
        kit = config.wipe.model_copy(update={"broker_configs": [broker.config_file]})
        memory = Location("service-memory", (), "none", "memory")
        result = Catalogue.from_settings(kit).scan(memory, search())
        where = f"pid:{broker.process.pid} (mosquitto)"
        assert result.status == "residue" and set(result.holders or {}) == {where}
        # Without the rule the broker is not scanned at all, and the scan has nothing to read.
        unseen = config.wipe.model_copy(update={"broker_configs": []})
        assert Catalogue.from_settings(unseen).scan(memory, search()).status == "absent"
