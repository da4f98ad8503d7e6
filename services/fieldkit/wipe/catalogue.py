"""The residue catalogue: every place a session's data can land on a tablet.

Each location has an eraser (what the session wipe does there) and a scanner (how the wipe
proves nothing is left). Where nothing may be erased selectively (journald, the broker's
persistence, the outbox, swap, process memory) the location is scan-only: a finding there
fails the record, because the data should never have reached it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fieldkit.wipe.markers import Hit, MarkerSearch
from fieldkit.wipe.record import Finding, LocationResult
from fieldkit.wipe.settings import WipeSection

log = logging.getLogger(__name__)

# What the session wipe does at a location:
#   session-folder  overwrite and remove ``<root>/<sid>/``
#   everything      overwrite and remove everything under the root (the root itself stays)
#   cups-jobs       overwrite and remove the spool's job files (c<job>, d<job>-<doc>)
#   matching-files  overwrite and remove each file the scan finds markers in
#   none            scan only: a finding fails the record
EraseMode = Literal["session-folder", "everything", "cups-jobs", "matching-files", "none"]
Medium = Literal["files", "swap", "memory"]
CUPS_JOB_FILE = re.compile(r"^(c\d{5,}|d\d{5,}-\d{3,})$")
MAX_FINDINGS = 50  # per location: enough to act on, small enough for the record


@dataclass(frozen=True)
class Location:
    name: str
    roots: tuple[Path, ...] = ()
    erase: EraseMode = "none"
    medium: Medium = "files"
    description: str = ""


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
                Location("temp", tuple(s.temp_dirs), "matching-files",
                         description="temporary folders"),
                Location("core-dumps", tuple(s.core_dump_dirs), "everything",
                         description="core dumps (none may exist)"),
                Location("swap", (s.swaps_file,), "none", "swap",
                         description="swap devices (none may be active)"),
                Location("broker-persistence", tuple(s.broker_persistence), "none",
                         description="local mosquitto persistence (must be off)"),
                Location("outbox", tuple(s.outbox_dirs), "none",
                         description="outbox and its SQLite journals: sealed data only"),
                Location("service-memory", (), "none", "memory",
                         description="memory of the fieldkit services via /proc/<pid>/mem"),
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
        """Erase what the location's mode says, then scan it; the result is what the scan saw."""
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
        elif location.erase == "matching-files":
            before = self.scan(location, search)
            for where in sorted({f.where for f in before.findings}):
                path = Path(where)
                if path.is_file() and not path.is_symlink():
                    erased += shred_file(path)
        result = self.scan(location, search)
        action = {
            "session-folder": "session folder overwritten and removed",
            "everything": "contents overwritten and removed",
            "cups-jobs": "spooled jobs overwritten and removed",
            "matching-files": "files with session data overwritten and removed",
            "none": "scanned only",
        }[location.erase]
        return result.model_copy(update={"erased": erased, "action": action})

    # -- scanning ------------------------------------------------------------------------------

    def scan(self, location: Location, search: MarkerSearch) -> LocationResult:
        if location.medium == "swap":
            return scan_swap(location)
        if location.medium == "memory":
            return self.scan_memory(location, search)
        return self.scan_files(location, search)

    def scan_files(self, location: Location, search: MarkerSearch) -> LocationResult:
        findings: list[Finding] = []
        files = scanned = unreadable = 0
        present = interrupted = False
        for root in location.roots:
            if not root.exists():
                continue
            present = True
            for path in read_ahead(regular_files(root), AHEAD_BYTES):
                if self.stopping.is_set():
                    interrupted = True
                    break
                files += 1
                name_hits = search.search_bytes(os.fsencode(path.name))
                try:
                    with path.open("rb", buffering=0) as stream:
                        hits, read = search.search_stream(
                            stream, self.settings.chunk_bytes, self.settings.max_file_bytes
                        )
                except OSError as exc:
                    if exc.errno in (errno.ENOENT,):
                        continue  # gone while we looked: nothing left to find
                    unreadable += 1
                    continue
                scanned += read
                if not (name_hits or hits):
                    continue
                shown = redact_path(path, search)
                findings += [
                    Finding(where=shown, kind=f"name:{h.kind}", offset=0) for h in name_hits
                ]
                findings += [Finding(where=shown, kind=h.kind, offset=h.offset) for h in hits]
        status: Literal["clean", "residue", "absent", "not-readable"]
        if findings:
            status = "residue"
        elif unreadable:
            status = "not-readable"
        elif not present:
            status = "absent"
        else:
            status = "clean"
        note = f"{unreadable} files could not be read" if unreadable else ""
        if interrupted:
            note = "scan interrupted: the service was stopping"
        return LocationResult(
            name=location.name,
            status=status,
            scanned_files=files,
            scanned_bytes=scanned,
            findings=findings[:MAX_FINDINGS],
            note=note,
            fails=status in ("residue", "not-readable") or interrupted,
        )

    def scan_memory(self, location: Location, search: MarkerSearch) -> LocationResult:
        if not self.settings.scan_process_memory:
            return LocationResult(name=location.name, status="absent", note="memory scan is off")
        findings: list[Finding] = []
        processes = scanned = unreadable = 0
        for pid in service_pids(self.settings.process_patterns, self.own_pids):
            if self.stopping.is_set():
                break
            processes += 1
            try:
                hits, read = scan_process(pid, search, self.settings.chunk_bytes)
            except OSError:
                unreadable += 1
                continue
            scanned += read
            findings += [Finding(where=f"pid:{pid}", kind=h.kind, offset=h.offset) for h in hits]
        if findings:
            status: Literal["clean", "residue", "absent", "not-readable"] = "residue"
        elif unreadable:
            status = "not-readable"
        elif processes == 0:
            status = "absent"
        else:
            status = "clean"
        note = f"{processes} processes"
        if unreadable:
            note += f", {unreadable} not readable (scanning memory needs root)"
        return LocationResult(
            name=location.name,
            status=status,
            scanned_files=processes,
            scanned_bytes=scanned,
            findings=findings[:MAX_FINDINGS],
            note=note,
            # Memory that cannot be read is reported, not failed: it cannot be cleaned from
            # here either, and the holders' own zeroing is what the handshake vouches for.
            fails=status == "residue",
        )


def redact_path(path: Path, search: MarkerSearch) -> str:
    """The path as a finding shows it: never with a marker in it."""
    text = str(path)
    if search.search_bytes(os.fsencode(text)):
        return str(path.parent / "[name holds a marker]")
    return text


# How much of the next file the kernel is asked to start reading while this one is searched.
AHEAD_BYTES = 4 << 20


def read_ahead(paths: Iterator[Path], ahead: int) -> Iterator[Path]:
    """The same paths; as each is handed out, the kernel starts reading the next one's first
    ``ahead`` bytes (POSIX_FADV_WILLNEED), so the disk is not idle between two files while
    the last chunks of one are searched. Advice only: a file that cannot be opened is
    reported when it is scanned, not here."""
    following = next(paths, None)
    while following is not None:
        current, following = following, next(paths, None)
        if following is not None:
            with contextlib.suppress(OSError):
                fd = os.open(following, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    os.posix_fadvise(fd, 0, ahead, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
        yield current


def regular_files(root: Path, recurse: bool = True) -> Iterator[Path]:
    """Regular files under ``root``, never following symlinks or crossing into other types."""
    try:
        info = root.lstat()
    except OSError:
        return
    if stat.S_ISREG(info.st_mode):
        yield root
        return
    if not stat.S_ISDIR(info.st_mode):
        return
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            try:
                if stat.S_ISREG(path.lstat().st_mode):
                    yield path
            except OSError:
                continue
        if not recurse:
            dirs.clear()


def shred_file(path: Path) -> int:
    """Overwrite a file's bytes with zeros, flush them, then unlink it. Returns 1 if removed.

    On tmpfs this clears the pages; on flash the controller may keep old blocks, which is
    why the data volume is encrypted and contract-end sanitization is a crypto erase.
    """
    try:
        size = path.lstat().st_size
        with path.open("r+b", buffering=0) as out:
            block = bytes(min(size, 1 << 20))
            left = size
            while left > 0:
                left -= out.write(block[: min(left, len(block))])
            os.fsync(out.fileno())
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("could not shred a file in %s: %s", path.parent, exc.strerror)
        return 0
    return 1


def shred_tree(root: Path, *, remove_root: bool) -> int:
    count = 0
    for path in list(regular_files(root)):
        count += shred_file(path)
    for folder, dirs, names in os.walk(root, topdown=False, followlinks=False):
        for name in names:  # symlinks, sockets, fifos: nothing to overwrite, just remove them
            with contextlib.suppress(OSError):
                (Path(folder) / name).unlink()
        for name in dirs:
            target = Path(folder) / name
            try:
                if target.is_symlink():
                    target.unlink()
                else:
                    target.rmdir()
            except OSError:
                pass
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


def service_pids(patterns: list[str], exclude: set[int]) -> Iterator[int]:
    wanted = [p.encode() for p in patterns]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(w in cmdline for w in wanted):
            yield int(entry.name)


MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


def scan_process(pid: int, search: MarkerSearch, chunk_bytes: int) -> tuple[list[Hit], int]:
    """Scan the readable private memory of one process (needs ptrace rights, i.e. root)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    hits: list[Hit] = []
    read = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            match = MAPS_LINE.match(line)
            if match is None:
                continue
            start, end, perms, name = match.groups()
            # Writable mappings hold what a process made at run time: heap, stacks, anonymous
            # buffers. Read-only file mappings are code and data from disk, never a session's.
            if perms[0] != "r" or perms[1] != "w" or name in ("[vvar]", "[vsyscall]", "[vdso]"):
                continue
            begin, stop = int(start, 16), int(end, 16)
            try:
                mem.seek(begin)
                found, count = search.search_stream(mem, chunk_bytes, stop - begin)
            except OSError:
                continue
            read += count
            hits += [Hit(h.kind, begin + h.offset) for h in found]
    return hits, read
