"""The residue catalogue: every place a session's data can land on a tablet.

Each location has an eraser (what the session wipe does there) and a scanner (how the wipe
proves nothing is left). Where nothing may be erased selectively (journald, the broker's
persistence, the outbox, swap, process memory) the location is scan-only: a finding there
fails the record, because the data should never have reached it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fieldkit.processes import KIT_ENV
from fieldkit.wipe.markers import Hit, MarkerSearch
from fieldkit.wipe.record import Finding, LocationResult
from fieldkit.wipe.settings import WipeSection

log = logging.getLogger(__name__)

# What the session wipe does at a location (only ever in the kit's own session and spool places):
#   session-folder  overwrite and remove ``<root>/<sid>/``
#   everything      overwrite and remove everything under the root (the root itself stays)
#   cups-jobs       overwrite and remove the spool's job files (c<job>, d<job>-<doc>)
#   none            scan only: a finding fails the record, and nothing there is removed
EraseMode = Literal["session-folder", "everything", "cups-jobs", "none"]
Medium = Literal["files", "swap", "memory"]
CUPS_JOB_FILE = re.compile(r"^(c\d{5,}|d\d{5,}-\d{3,})$")
# Per location the record lists this many findings (those of the places holding most first)
# and names this many places with their counts; the totals are always counted in full.
MAX_FINDINGS = 50
MAX_HOLDERS = 100
# Once a location's time budget has run out, how long the unscanned rest may be counted.
REMAINDER_COUNT_SECONDS = 0.5
# Never block in an open (a fifo, a device swapped in), never follow a last-component symlink.
SCAN_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
SHRED_OPEN = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
FileState = Literal["scanned", "gone", "unreadable", "not-regular", "cut", "in-part"]
Status = Literal["clean", "residue", "absent", "not-readable", "incomplete"]


@dataclass(frozen=True)
class Location:
    name: str
    roots: tuple[Path, ...] = ()
    erase: EraseMode = "none"
    medium: Medium = "files"
    description: str = ""


@dataclass
class Tally:
    """The findings at one location, counted per place that holds them (a file, a process)."""

    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, list[Finding]] = field(default_factory=dict)

    def add(self, where: str, findings: list[Finding]) -> None:
        if not findings:
            return
        self.counts[where] = self.counts.get(where, 0) + len(findings)
        kept = self.first.setdefault(where, [])
        kept += findings[: MAX_FINDINGS - len(kept)]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def result(self, name: str, status: Status, **fields: Any) -> LocationResult:
        """The location's result: the places holding most findings first, each counted."""
        largest = sorted(self.counts, key=lambda where: (-self.counts[where], where))
        return LocationResult(
            name=name,
            status=status,
            findings=[f for where in largest for f in self.first[where]][:MAX_FINDINGS],
            finding_count=self.total,
            holders={where: self.counts[where] for where in largest[:MAX_HOLDERS]},
            holder_count=len(largest),
            **fields,
        )


@dataclass
class Catalogue:
    """The locations of one device, built from its ``[wipe]`` settings."""

    locations: list[Location]
    settings: WipeSection
    own_pids: set[int] = field(default_factory=lambda: {os.getpid()})
    # Set when the service stops: a long scan ends at the next file, reported as interrupted.
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def from_settings(cls, settings: WipeSection) -> Catalogue:
        s = settings
        profile = tuple(p for p in (s.browser_profile, s.browser_cache) if p is not None)
        return cls(
            [
                Location("session-tmpfs", tuple(s.session_dirs), "session-folder",
                         description="per-session folders on tmpfs"),
                Location("browser-profile", profile, "everything",
                         description="kiosk browser profile: SQLite DBs, caches, storage"),
                Location("cups-spool", tuple(s.cups_spool_dirs), "cups-jobs",
                         description="CUPS spool: job control and data files"),
                Location("cups-cache", tuple(s.cups_cache_dirs), "none",
                         description="CUPS job history cache"),
                Location("journald", tuple(s.journal_dirs), "none",
                         description="systemd journal files"),
                Location("temp", tuple(s.temp_dirs), "none",
                         description="temporary folders (not the kit's alone: scanned only)"),
                Location("core-dumps", tuple(s.core_dump_dirs), "everything",
                         description="core dumps (none may exist)"),
                Location("swap", (s.swaps_file,), "none", "swap",
                         description="swap devices (none may be active)"),
                Location("broker-persistence", tuple(s.broker_persistence), "none",
                         description="local mosquitto persistence (must be off)"),
                Location("outbox", tuple(s.outbox_dirs), "none",
                         description="outbox and its SQLite journals: sealed data only"),
                Location("service-memory", (), "none", "memory",
                         description="memory of the fieldkit services and the kit's broker "
                                     "via /proc/<pid>/mem"),
            ],
            settings,
        )  # fmt: skip

    def without(self, name: str) -> Catalogue:
        """The same catalogue with one location's eraser switched off (for checking the checks)."""
        changed = [
            Location(loc.name, loc.roots, "none", loc.medium, loc.description)
            if loc.name == name
            else loc
            for loc in self.locations
        ]
        return Catalogue(changed, self.settings, self.own_pids, self.stopping)

    def names(self) -> list[str]:
        return [loc.name for loc in self.locations]

    # -- erasing -------------------------------------------------------------------------------

    def erase(self, location: Location, sid: str | None, search: MarkerSearch) -> LocationResult:
        """Erase what the location's mode says, then scan it within the session wipe's budget;
        the result is what the scan saw. Only what the kit wrote is erased: the session's
        folder, the kiosk browser's profile, the spool's jobs, core dumps; a marker anywhere
        else is a finding, and the file stays."""
        erased = 0
        if location.erase == "session-folder" and sid is not None:
            for root in location.roots:
                folder = root / sid
                if folder.is_dir() and not folder.is_symlink():
                    erased += shred_tree(folder, remove_root=True)
        elif location.erase == "everything":
            for root in location.roots:
                if root.is_dir() and not root.is_symlink():
                    erased += shred_tree(root, remove_root=False)
        elif location.erase == "cups-jobs":
            for root in location.roots:
                for path in regular_files(root, recurse=False):
                    if CUPS_JOB_FILE.match(path.name):
                        erased += shred_file(path)
        result = self.scan(location, search, self.settings.session_location_budget_seconds)
        action = {
            "session-folder": "session folder overwritten and removed",
            "everything": "contents overwritten and removed",
            "cups-jobs": "spooled jobs overwritten and removed",
            "none": "scanned only",
        }[location.erase]
        return result.model_copy(update={"erased": erased, "action": action})

    # -- scanning ------------------------------------------------------------------------------

    def scan(
        self, location: Location, search: MarkerSearch, budget: float | None = None
    ) -> LocationResult:
        """Scan one location, for at most ``budget`` seconds (default: the daily scan's)."""
        seconds = self.settings.location_budget_seconds if budget is None else budget
        if location.medium == "swap":
            return scan_swap(location)
        if location.medium == "memory":
            return self.scan_memory(location, search, seconds)
        return self.scan_files(location, search, seconds)

    def scan_files(self, location: Location, search: MarkerSearch, budget: float) -> LocationResult:
        deadline = time.monotonic() + budget
        tally = Tally()
        states: Counter[FileState] = Counter()
        scanned = mount_points = 0
        present = interrupted = False
        left: tuple[int, bool] | None = None  # files not scanned once the budget ran out
        roots = iter(location.roots)
        for root in roots:
            if not root.exists():
                continue
            present = True
            walk = FileWalk(root)
            files = read_ahead(walk.files(), AHEAD_BYTES, deadline)
            for path in files:
                if self.stopping.is_set():
                    interrupted = True
                    break
                if time.monotonic() >= deadline:
                    rest = itertools.chain([path], files, *(FileWalk(r).files() for r in roots))
                    left = count_until(rest, time.monotonic() + REMAINDER_COUNT_SECONDS)
                    break
                name_hits = search.search_bytes(os.fsencode(path.name))
                hits, read, state = self.scan_file(path, walk.device, search, deadline)
                states[state] += 1
                scanned += read
                if name_hits or hits:
                    shown = redact_path(path, search)
                    found = [
                        Finding(where=shown, kind=f"name:{h.kind}", offset=0) for h in name_hits
                    ]
                    found += [Finding(where=shown, kind=h.kind, offset=h.offset) for h in hits]
                    tally.add(shown, found)
            mount_points += walk.mount_points
            if interrupted or left is not None:
                break
        if states["cut"]:
            # The file being read when the budget ran out was read in part only.
            counted, complete = left or (0, True)
            left = (counted + states["cut"], complete)
        notes = []
        if left is not None:
            notes.append(f"scan stopped after {budget:g} s: {not_scanned(left, 'files')}")
        if interrupted:
            notes.append("scan interrupted: the service was stopping")
        if states["unreadable"]:
            notes.append(f"{states['unreadable']} files could not be read")
        if states["not-regular"]:
            notes.append(f"{states['not-regular']} files were no longer regular files: not read")
        if states["in-part"]:
            notes.append(f"{states['in-part']} files larger than max_file_bytes scanned in part")
        if mount_points:
            notes.append(f"skipped {mount_points} mount points")
        status: Status
        if tally.total:
            status = "residue"
        elif left is not None or interrupted:
            status = "incomplete"
        elif states["unreadable"]:
            status = "not-readable"
        elif not present:
            status = "absent"
        else:
            status = "clean"
        return tally.result(
            location.name,
            status,
            scanned_files=states["scanned"] + states["in-part"],
            scanned_bytes=scanned,
            note="; ".join(notes),
            fails=status in ("residue", "not-readable", "incomplete"),
        )

    def scan_file(
        self, path: Path, device: int | None, search: MarkerSearch, deadline: float
    ) -> tuple[list[Hit], int, FileState]:
        """Search one file, opened so that nothing but a regular file of the location's own
        filesystem is read (a fifo or device swapped in since the walk is left alone)."""
        try:
            fd = os.open(path, SCAN_OPEN)
        except FileNotFoundError:
            return [], 0, "gone"  # gone while we looked: nothing left to find
        except OSError as exc:
            return [], 0, "not-regular" if exc.errno == errno.ELOOP else "unreadable"
        with open(fd, "rb", buffering=0) as stream:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_dev != device:
                return [], 0, "not-regular"
            limit = self.settings.max_file_bytes
            try:
                hits, read = search.search_stream(
                    stream, self.settings.chunk_bytes, limit, deadline
                )
            except OSError:
                return [], 0, "unreadable"
        if read < min(info.st_size, limit) and time.monotonic() >= deadline:
            return hits, read, "cut"
        return hits, read, "in-part" if info.st_size > limit else "scanned"

    def scan_memory(
        self, location: Location, search: MarkerSearch, budget: float
    ) -> LocationResult:
        if not self.settings.scan_process_memory:
            return LocationResult(name=location.name, status="absent", note="memory scan is off")
        deadline = time.monotonic() + budget
        tally = Tally()
        scanned = unreadable = cut = 0
        processes = kit_processes(
            self.settings.process_patterns,
            self.settings.broker_configs,
            self.own_pids,
            kit=os.environ.get(KIT_ENV),
        )
        interrupted = False

        def scan_one(pid: int) -> tuple[list[Hit], int, bool] | str:
            if self.stopping.is_set() or time.monotonic() >= deadline:
                return "not-scanned"
            try:
                return scan_process(pid, search, self.settings.chunk_bytes, deadline)
            except (FileNotFoundError, ProcessLookupError):
                return "gone"  # it ended: its memory is gone
            except OSError:
                return "unreadable"

        # Reading /proc/PID/mem and Hyperscan both release the GIL: the processes are read
        # side by side, one per core.
        with ThreadPoolExecutor(max_workers=MEMORY_SCAN_THREADS) as pool:
            outcomes = list(pool.map(scan_one, [pid for pid, _ in processes]))
        for (pid, name), outcome in zip(processes, outcomes, strict=True):
            if outcome == "not-scanned":
                interrupted = interrupted or self.stopping.is_set()
                cut += 1
                continue
            if outcome == "unreadable":
                unreadable += 1
                continue
            if isinstance(outcome, str):
                continue
            hits, read, complete = outcome
            scanned += read
            cut += not complete
            where = f"pid:{pid} ({name})"
            tally.add(where, [Finding(where=where, kind=h.kind, offset=h.offset) for h in hits])
        status: Status
        if tally.total:
            status = "residue"
        elif cut:
            status = "incomplete"
        elif unreadable:
            status = "not-readable"
        elif not processes:
            status = "absent"
        else:
            status = "clean"
        note = f"{len(processes)} processes"
        if unreadable:
            note += f", {unreadable} not readable (scanning memory needs root)"
        if interrupted:
            note += f"; scan interrupted: the service was stopping ({cut} processes not scanned)"
        elif cut:
            note += f"; scan stopped after {budget:g} s: {cut} processes not scanned"
        return tally.result(
            location.name,
            status,
            scanned_files=len(processes) - cut - unreadable,
            scanned_bytes=scanned,
            note=note,
            # Memory that cannot be read is reported, not failed: it cannot be cleaned from
            # here either, and the holders' own zeroing is what the handshake vouches for.
            fails=status in ("residue", "incomplete"),
        )


def redact_path(path: Path, search: MarkerSearch) -> str:
    """The path as a finding shows it: never with a marker in it."""
    text = str(path)
    if search.search_bytes(os.fsencode(text)):
        return str(path.parent / "[name holds a marker]")
    return text


# How much of the next file the kernel is asked to start reading while this one is searched.
AHEAD_BYTES = 4 << 20


def read_ahead(paths: Iterator[Path], ahead: int, until: float | None = None) -> Iterator[Path]:
    """The same paths; as each is handed out, the kernel starts reading the next one's first
    ``ahead`` bytes (POSIX_FADV_WILLNEED), so the disk is not idle between two files while
    the last chunks of one are searched. Advice only, and none after ``until`` (monotonic): a
    file that cannot be opened is reported when it is scanned, not here."""
    following = next(paths, None)
    while following is not None:
        current, following = following, next(paths, None)
        if following is not None and (until is None or time.monotonic() < until):
            with contextlib.suppress(OSError):
                fd = os.open(following, SCAN_OPEN)
                try:
                    os.posix_fadvise(fd, 0, ahead, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
        yield current


def count_until(paths: Iterator[Path], until: float) -> tuple[int, bool]:
    """How many paths are left, counted until ``until`` (monotonic); and whether that is all."""
    count = 0
    for _ in paths:
        count += 1
        if time.monotonic() >= until:
            return count, False
    return count, True


def not_scanned(left: tuple[int, bool], what: str) -> str:
    count, complete = left
    return f"{'' if complete else 'at least '}{count} {what} not scanned"


def mount_points() -> frozenset[bytes]:
    """Every mount point this process sees (``/proc/self/mountinfo``, unescaped), so a walk
    can pass one by without a stat, which a hung FUSE daemon would never answer."""
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return frozenset()
    points = set()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            points.add(MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4]))
    return frozenset(points)


MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")


@dataclass
class FileWalk:
    """What lies under a root on the root's own filesystem, depth first, symlinks never
    followed. Another filesystem mounted inside (proc, sysfs, a FUSE or tmpfs mount, a bind
    mount) is not entered, nor even stat'ed when /proc/self/mountinfo names it: it is counted
    in ``mount_points``."""

    root: Path
    recurse: bool = True
    mount_points: int = 0
    device: int | None = None  # the root's st_dev, once the walk has begun

    def files(self) -> Iterator[Path]:
        """The regular files."""
        return (path for path, mode in self.entries() if stat.S_ISREG(mode))

    def entries(self) -> Iterator[tuple[Path, int]]:
        """(path, st_mode) of everything under the root, a folder after what it holds; the
        root itself only when it is a regular file."""
        try:
            info = self.root.lstat()
        except OSError:
            return
        self.device = info.st_dev
        if stat.S_ISREG(info.st_mode):
            yield self.root, info.st_mode
            return
        if not stat.S_ISDIR(info.st_mode):
            return
        mounts = mount_points()
        real = os.fsencode(os.path.realpath(self.root))
        # One frame per open folder: what is left of its listing, its path, real path and mode.
        stack = [(iter(listing(self.root)), self.root, real, -1)]
        while stack:
            pending, folder, folder_real, mode = stack[-1]
            entry = next(pending, None)
            if entry is None:
                stack.pop()
                if mode != -1:
                    yield folder, mode
                continue
            path = folder / entry.name
            path_real = folder_real + b"/" + os.fsencode(entry.name)
            if path_real in mounts:
                self.mount_points += 1
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != self.device:
                self.mount_points += 1
            elif not stat.S_ISDIR(info.st_mode):
                yield path, info.st_mode
            elif self.recurse:
                stack.append((iter(listing(path)), path, path_real, info.st_mode))


def listing(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def regular_files(root: Path, recurse: bool = True) -> Iterator[Path]:
    """Regular files under ``root`` on its filesystem, never following symlinks."""
    return FileWalk(root, recurse).files()


def shred_file(path: Path) -> int:
    """Overwrite a file's bytes with zeros, flush them, then unlink it. Returns 1 if removed.

    Only a regular file is written: the open neither blocks nor follows a symlink, and what
    it opened is checked before a byte is written. On tmpfs this clears the pages; on flash
    the controller may keep old blocks, which is why the data volume is encrypted and
    contract-end sanitization is a crypto erase.
    """
    try:
        fd = os.open(path, SHRED_OPEN)
        with open(fd, "wb", buffering=0) as out:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return 0
            size = info.st_size
            block = bytes(min(size, 1 << 20))
            left = size
            while left > 0:
                left -= out.write(block[: min(left, len(block))])
            os.fsync(fd)
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("could not shred a file in %s: %s", path.parent, exc.strerror)
        return 0
    return 1


def shred_tree(root: Path, *, remove_root: bool) -> int:
    """Overwrite and remove everything under ``root`` on its own filesystem (a mount point
    inside is left alone); returns how many files were overwritten."""
    count = 0
    for path, mode in FileWalk(root).entries():
        if stat.S_ISREG(mode):
            count += shred_file(path)
        elif stat.S_ISDIR(mode):
            with contextlib.suppress(OSError):
                path.rmdir()
        else:  # symlinks, sockets, fifos: nothing to overwrite, just remove them
            with contextlib.suppress(OSError):
                path.unlink()
    if remove_root:
        with contextlib.suppress(OSError):
            root.rmdir()
    return count


def scan_swap(location: Location) -> LocationResult:
    (swaps,) = location.roots or (Path("/proc/swaps"),)
    try:
        lines = swaps.read_text().splitlines()[1:]
    except FileNotFoundError:
        lines = []
    active = [line.split()[0] for line in lines if line.strip()]
    if active:
        return LocationResult(
            name=location.name,
            status="present",
            note=f"{len(active)} swap areas active: session memory may have been written to disk",
            fails=True,
        )
    return LocationResult(name=location.name, status="absent", note="no swap active")


def kit_processes(
    patterns: list[str], broker_configs: list[Path], exclude: set[int], kit: str | None = None
) -> list[tuple[int, str]]:
    """(pid, name) of the kit's processes: a command line holding one of ``patterns``, or a
    mosquitto started on one of the kit's broker configs (not any mosquitto on the machine).

    ``kit``: this kit's ``FIELDKIT_KIT`` (``fieldkit up`` marks every process it starts with
    its runtime folder); then only processes that carry the same mark are the kit's, so a
    development machine's other kits (tests, a second ``fieldkit up``) are neither read nor
    counted against this one's time budget."""
    wanted = [p.encode() for p in patterns]
    configs = {os.fsencode(path) for path in broker_configs}
    mark = f"{KIT_ENV}={kit}".encode() if kit else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            argv = cmdline.split(b"\0")
            broker = os.path.basename(argv[0]) == b"mosquitto" and not configs.isdisjoint(argv)
            if not (broker or any(w in cmdline for w in wanted)):
                continue
            if mark is not None and mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue  # another kit's process
            name = (entry / "comm").read_text(errors="replace").strip()
            found.append((int(entry.name), name))
        except OSError:
            continue  # ended while we looked
    return found


# Processes whose memory is read at the same time (the tablet has two to four cores).
MEMORY_SCAN_THREADS = min(4, os.cpu_count() or 1)
MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


def touched_mappings(pid: int) -> list[tuple[str, str, str, str]]:
    """(start, end, perms, name) of each mapping of ``pid`` that holds a page in memory or in
    swap (``/proc/PID/smaps``). A mapping never touched reads as zeros, or as its file: no
    session's data can be there, and skipping it spares reading gigabytes of reserved address
    space (thread arenas, allocator reserves) at every wipe."""
    mappings: list[tuple[str, str, str, str]] = []
    current: tuple[str, str, str, str] | None = None
    kept = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        match = MAPS_LINE.match(line)
        if match is not None:
            start, end, perms, name = match.groups()
            current, kept = (start, end, perms, name), False
            continue
        if current is None or kept:
            continue
        key, _, value = line.partition(":")
        if key in ("Rss", "Swap") and value.split() and value.split()[0] != "0":
            mappings.append(current)
            kept = True
    return mappings


def scan_process(
    pid: int, search: MarkerSearch, chunk_bytes: int, deadline: float | None = None
) -> tuple[list[Hit], int, bool]:
    """Scan the readable private memory of one process (needs ptrace rights, i.e. root).

    Returns the hits, the bytes read, and whether all was read before ``deadline``."""
    hits: list[Hit] = []
    read = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, perms, name in touched_mappings(pid):
            # Writable mappings hold what a process made at run time: heap, stacks, anonymous
            # buffers. Read-only file mappings are code and data from disk, never a session's.
            if perms[0] != "r" or perms[1] != "w" or name in ("[vvar]", "[vsyscall]", "[vdso]"):
                continue
            begin, stop = int(start, 16), int(end, 16)
            if deadline is not None and time.monotonic() >= deadline:
                return hits, read, False
            try:
                mem.seek(begin)
                found, count = search.search_stream(mem, chunk_bytes, stop - begin, deadline)
            except OSError:
                continue
            read += count
            hits += [Hit(h.kind, begin + h.offset) for h in found]
            if count < stop - begin and deadline is not None and time.monotonic() >= deadline:
                return hits, read, False
    return hits, read, True
