"""What the scanner looks for, and the streaming search itself.

A session scan looks for that session's own markers: its application ID (ASCII and UTF-16LE,
as Chromium's Local Storage keeps strings), fragments of its photo, and a per-session canary.
A daily scan looks for applicant data of any session: the 23-digit application-ID pattern and
the JPEG headers the photo pipeline writes. Findings name the kind of marker, never its value.

A marker must be something only the session's data holds: a photo fragment is taken where the
bytes are varied (a flat area of a plain photo compresses to runs that every such photo, and
many other files, contain), an ID or canary that is one character repeated is never a marker,
and IDs known not to be personal (the demo camera's) are neither a session's marker nor a daily
finding.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import hyperscan
import numpy as np
import numpy.typing as npt

from fieldkit.capture.appid import DEMO_ID, grouped
from fieldkit.wipe.fragments import one_character_run, varied

log = logging.getLogger(__name__)
Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]

# A 23-digit application ID, in ASCII or UTF-16LE. A regular expression would test every
# position (10 MB/s); the finders below test one position in 23 with numpy, and run only on
# buffers where Hyperscan's prefilter (PREFILTERS) found something for them to judge.
ID_DIGITS = 23
REACH = ID_DIGITS + 1  # units counted each side of a sample: enough to see a run is longer
# The photo pipeline (OpenCV) writes JFIF; cameras and other tools write EXIF.
JPEG_SOI = b"\xff\xd8\xff"
# What must be in a buffer for each special finder to have anything to judge. Unbounded on
# purpose: "[^0-9][0-9]{23}" would make Hyperscan test every byte (1 GB/s, not 6).
PREFILTERS: dict[str, bytes] = {
    "digits": rb"[0-9]{%d}" % ID_DIGITS,
    "digits-utf16": rb"(?:[0-9]\x00){%d}" % ID_DIGITS,
    "jpeg": rb"\xff\xd8\xff[\xe0\xe1]",
}
# Bytes around a match that its boundary checks may look at (one UTF-16 code unit).
CONTEXT = 2
# Chunks a reader thread keeps ready ahead of the search.
PREFETCH_CHUNKS = 3
# 23-digit IDs that are not an applicant's: a session marker or a daily finding of one would
# only find the code and the processes that carry the constant.
NOT_PERSONAL_IDS: tuple[str, ...] = (DEMO_ID,)


@dataclass(frozen=True)
class Marker:
    """One thing to look for: ``kind`` is what a finding reports; ``pattern`` is never shown."""

    kind: str
    pattern: bytes  # the exact bytes for a literal; unused for the other finders
    max_length: int
    finder: Literal["literal", "digits", "digits-utf16", "jpeg"] = "literal"
    # For a pattern finder: matches that are these exact bytes are not findings.
    exclude: frozenset[bytes] = frozenset()


def literal(kind: str, value: bytes) -> Marker:
    return Marker(kind, value, len(value))


def session_markers(
    application_id: str | None,
    photo_fragments: Iterable[bytes],
    canary: str | None,
    card: Iterable[tuple[bytes, str]] = (),
) -> list[Marker]:
    """The markers of one session, from what the kiosk told the wipe about it.

    A marker that ordinary data holds too is left out (and logged, without its value): an ID
    or canary that is one character repeated, a photo fragment that is not varied, an ID known
    not to be personal. It would find what is not the session's and fail the record for it."""
    markers: list[Marker] = []
    if application_id and application_id in NOT_PERSONAL_IDS:
        log.info("the session's ID is the demo ID: not a marker")
    elif application_id and one_character_run(application_id):
        log.warning("the session's ID is one digit repeated: not a marker")
    elif application_id:
        markers.append(literal("application-id", application_id.encode("ascii")))
        markers.append(literal("application-id-utf16", application_id.encode("utf-16-le")))
        # As the kiosk shows it for staff to compare with the form (and staff type it).
        shown = grouped(application_id)
        markers.append(literal("application-id-grouped", shown.encode("ascii")))
        markers.append(literal("application-id-grouped-utf16", shown.encode("utf-16-le")))
    for fragment in photo_fragments:
        if fragment and varied(fragment):
            markers.append(literal("photo", fragment))
        elif fragment:
            log.warning("a photo fragment of %d bytes is too uniform to be a marker", len(fragment))
    if canary and one_character_run(canary):
        log.warning("the session's canary is one character repeated: not a marker")
    elif canary:
        markers.append(literal("canary", canary.encode("ascii")))
        markers.append(literal("canary-utf16", canary.encode("utf-16-le")))
    markers += card_markers(card)
    return markers


# A card canary shorter than this is in ordinary memory too (fieldkit.card.certificate).
MIN_CARD_CANARY_BYTES = 8


def card_markers(card: Iterable[tuple[bytes, str]]) -> list[Marker]:
    """The card canaries of a session that read a card: ``(serial bytes, subject)`` pairs.

    The serial is looked for as the certificate holds it (big-endian bytes) and as hex text,
    the subject as UTF-8 (the certificate's own encoding and Python's text of it)."""
    markers: list[Marker] = []
    for serial, subject in card:
        if len(serial) >= MIN_CARD_CANARY_BYTES and not one_character_run(serial.hex()):
            markers.append(literal("card-serial", serial))
            markers.append(literal("card-serial-hex", serial.hex().encode("ascii")))
        subject_bytes = subject.encode("utf-8")
        if len(subject_bytes) >= MIN_CARD_CANARY_BYTES and not one_character_run(subject):
            markers.append(literal("card-subject", subject_bytes))
    return markers


def daily_markers(not_personal: Iterable[str] = NOT_PERSONAL_IDS) -> list[Marker]:
    """Applicant data of any session; the IDs in ``not_personal`` are not findings."""
    ids = [i for i in not_personal if len(i) == ID_DIGITS and i.isascii() and i.isdigit()]
    return [
        Marker(
            "application-id-pattern", b"", ID_DIGITS + 1, "digits",
            exclude=frozenset(i.encode("ascii") for i in ids),
        ),
        Marker(
            "application-id-pattern-utf16", b"", 2 * ID_DIGITS + 2, "digits-utf16",
            exclude=frozenset(i.encode("utf-16-le") for i in ids),
        ),
        Marker("jpeg", b"", 12, "jpeg"),
    ]  # fmt: skip


def escaped(value: bytes) -> bytes:
    """A Hyperscan expression matching exactly ``value`` (any bytes, zero bytes included)."""
    return b"".join(b"\\x%02x" % byte for byte in value)


def prefilter(expressions: list[bytes]) -> hyperscan.Database | None:
    """A block-mode database that reports each expression once per buffer (or None)."""
    if not expressions:
        return None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=expressions,
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH,
    )
    return database


@dataclass(frozen=True)
class Hit:
    kind: str
    offset: int


class MarkerSearch:
    """Searches bytes and streams in chunks; every finder runs at C speed over a chunk."""

    def __init__(self, markers: list[Marker]) -> None:
        self.markers = markers
        self._literals = [(m.kind, m.pattern) for m in markers if m.finder == "literal"]
        self._literals = [(kind, value) for kind, value in self._literals if value]
        self._special = [(m.kind, m.finder) for m in markers if m.finder != "literal"]
        self._exclude = [m.exclude for m in markers if m.finder != "literal"]
        self._local = threading.local()
        self._database = prefilter([PREFILTERS[finder] for _, finder in self._special])
        # bytes.find, literal by literal, ran at 130 MB/s over a process's memory (mostly zero
        # pages, and the UTF-16 markers hold zero bytes); one Hyperscan pass says at GB/s
        # which literals a buffer holds at all, and only those are looked for.
        self._literal_database = prefilter([escaped(value) for _, value in self._literals])
        # A match may straddle two chunks: keep this many bytes of the previous one. A match
        # is judged only with CONTEXT bytes on each side (or at the very start or end of the
        # data), and the carry is long enough that every match is judged in some buffer.
        self.carry = max((m.max_length for m in markers), default=0) + 4 * CONTEXT

    def _matches(self, data: bytes) -> Iterator[tuple[str, int, int]]:
        if self._literal_database is not None:
            for index in sorted(self._present(self._literal_database, data, "literal")):
                kind, value = self._literals[index]
                start = data.find(value)
                while start >= 0:
                    yield kind, start, start + len(value)
                    start = data.find(value, start + 1)
        if self._database is None:
            return
        # Hyperscan says, at several GB/s, which finders have anything to judge in this
        # buffer (one match each is enough); only those run. Random and binary data, most of
        # a disk, has none.
        present = self._present(self._database, data, "special")
        a = np.frombuffer(data, dtype=np.uint8)
        for index, (kind, finder) in enumerate(self._special):
            if finder == "jpeg" and index not in present:
                # The start of a header cut off by the buffer's end, judged with the next chunk.
                edge = max(0, len(data) - len(JPEG_SOI))
                if b"\xff" in data[edge:]:  # most buffers: no numpy call per buffer
                    for s, e in _jpeg_headers(a[edge:], data[edge:]):
                        yield kind, edge + s, edge + e
                continue
            if index not in present:
                continue
            if finder in ("digits", "digits-utf16"):
                step = 1 if finder == "digits" else 2
                exclude = self._exclude[index]
                for s, e in _digit_runs(a, step):
                    if not exclude or data[s : s + ID_DIGITS * step] not in exclude:
                        yield kind, s, e
            else:
                yield from ((kind, s, e) for s, e in _jpeg_headers(a, data))

    def _present(self, database: hyperscan.Database, data: bytes, name: str) -> set[int]:
        """Which of the database's expressions occur in ``data`` (one match each is enough)."""
        present: set[int] = set()

        def candidate(index: int, start: int, end: int, flags: int, context: object) -> None:
            present.add(index)

        # A scratch space serves one scan at a time: one per database and thread.
        scratch: hyperscan.Scratch | None = getattr(self._local, name, None)
        if scratch is None:
            scratch = hyperscan.Scratch(database)
            setattr(self._local, name, scratch)
        database.scan(data, match_event_handler=candidate, scratch=scratch)
        return present

    def search_bytes(self, data: bytes) -> list[Hit]:
        return [Hit(k, start) for k, start, end in self._matches(data) if end <= len(data)]

    def search_stream(
        self, stream: BinaryIO, chunk_bytes: int, limit: int, deadline: float | None = None
    ) -> tuple[list[Hit], int]:
        """Hits in the stream (up to ``limit`` bytes) and the number of bytes read.

        No chunk is read once ``time.monotonic()`` has passed ``deadline``: the caller sees
        fewer bytes read than there were."""
        hits: list[Hit] = []
        seen: set[tuple[str, int]] = set()
        tail = b""
        base = 0  # absolute offset of tail[0]
        read = 0
        with contextlib.closing(_chunks(stream, chunk_bytes, limit, deadline)) as chunks:
            for chunk in itertools.chain(chunks, [b""]):
                eof = not chunk
                read += len(chunk)
                last = eof or read >= limit
                data = tail + chunk
                for kind, start, end in self._matches(data):
                    # A match touching the end may still grow, or its boundary check may
                    # change, once the next chunk arrives: it is judged then, from the tail.
                    if end > len(data) or (base > 0 and start < CONTEXT):
                        continue
                    if not last and end > len(data) - CONTEXT:
                        continue
                    key = (kind, base + start)
                    if key not in seen:
                        seen.add(key)
                        hits.append(Hit(kind, base + start))
                if last:
                    break
                keep = min(len(data), self.carry)
                base += len(data) - keep
                tail = data[len(data) - keep :]
        return hits, read


def _before(deadline: float | None) -> bool:
    return deadline is None or time.monotonic() < deadline


def _chunks(
    stream: BinaryIO, chunk_bytes: int, limit: int, deadline: float | None = None
) -> Generator[bytes, None, None]:
    """The stream's chunks, up to ``limit`` bytes, none begun after ``deadline``.

    A regular file of more than a few chunks is read by a thread, PREFETCH_CHUNKS ahead of
    the search: the read and Hyperscan both release the GIL, so the disk and the search
    work at the same time. Memory, pipes and small files are read in line.
    """
    try:
        fd = stream.fileno()
        info = os.fstat(fd)
        ahead = stat.S_ISREG(info.st_mode) and info.st_size > PREFETCH_CHUNKS * chunk_bytes
    except (OSError, AttributeError, ValueError):
        ahead = False
    if ahead:
        # Read to the end: the kernel may read further ahead than for a random reader.
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        yield from _prefetched(stream, chunk_bytes, limit, deadline)
        return
    read = 0
    while read < limit and _before(deadline):
        chunk = stream.read(min(chunk_bytes, limit - read))
        if not chunk:
            return
        read += len(chunk)
        yield chunk


def _prefetched(
    stream: BinaryIO, chunk_bytes: int, limit: int, deadline: float | None
) -> Generator[bytes, None, None]:
    ready: queue.Queue[bytes | OSError | None] = queue.Queue(maxsize=PREFETCH_CHUNKS)
    stop = threading.Event()

    def put(item: bytes | OSError | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=0.1)
                return

    def run() -> None:
        read = 0
        try:
            while read < limit and not stop.is_set() and _before(deadline):
                chunk = stream.read(min(chunk_bytes, limit - read))
                if not chunk:
                    break
                read += len(chunk)
                put(chunk)
        except OSError as exc:
            put(exc)
        put(None)

    reader = threading.Thread(target=run, name="scan-read", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, OSError):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _run_counts(
    a: Bytes, centres: Ints, step: int, zero_after: bool
) -> tuple[Ints, Ints, npt.NDArray[np.bool_]]:
    """For each centre, how many digit units run left and right of it (itself included).

    A unit is one digit (``step`` 1) or a digit followed by a zero byte (``step`` 2, UTF-16LE).
    Counting stops at REACH units; the third array says whether the buffer's end stopped the
    count to the right, where the run may go on unseen.
    """
    size = len(a)
    offsets = np.arange(0, REACH + 1, dtype=np.int64) * step
    counts = []
    edge = np.zeros(len(centres), dtype=np.bool_)
    for direction in (-1, 1):
        index = centres[:, None] + direction * offsets[None, :]
        inside = (index >= 0) & (index + (step - 1) < size)
        safe = np.clip(index, 0, size - 1)
        unit = (a[safe] - 48) < 10
        if zero_after:
            unit &= a[np.clip(safe + 1, 0, size - 1)] == 0
        unit &= inside
        run = np.cumprod(unit, axis=1).sum(axis=1)
        counts.append(run)
        # The count stopped at a position outside the buffer: the run may go on there.
        edge = ~inside[np.arange(len(centres)), np.minimum(run, REACH)]
    return counts[0], counts[1], edge


def _digit_runs(a: Bytes, step: int) -> Iterator[tuple[int, int]]:
    """Runs of exactly ID_DIGITS digit units; a run touching the end ends at the buffer's end.

    Every run of ID_DIGITS units or more holds a unit at a multiple of ID_DIGITS units from
    the start, so only those are tested first; at random data that is about one byte in
    six hundred, which is why this runs at memory speed.
    """
    size = len(a)
    span = ID_DIGITS * step
    for parity in range(step):
        first = parity + (ID_DIGITS - 1) * step
        samples = a[first::span]
        centres = np.flatnonzero((samples - 48) < 10).astype(np.int64) * span + first
        # A run of ID_DIGITS units through a centre reaches half that far on one side at
        # least: test those two units before counting whole runs.
        half = (ID_DIGITS // 2) * step
        near = np.clip(np.stack([centres - half, centres + half]), 0, max(size - 1, 0))
        centres = centres[((a[near] - 48) < 10).any(axis=0)]
        if not len(centres):
            continue
        left, right, right_edge = _run_counts(a, centres, step, step == 2)
        length = left + right - 1
        for i in np.flatnonzero((length == ID_DIGITS) & (left > 0)):
            start = int(centres[i]) - (int(left[i]) - 1) * step
            end = start + span
            yield start, (size if right_edge[i] else end)


def _jpeg_headers(a: Bytes, data: bytes) -> Iterator[tuple[int, int]]:
    """JPEG start-of-image followed by a JFIF or EXIF application segment.

    A header cut off by the end of the buffer is yielded as ending past it, so the stream
    search judges it with the next chunk and drops it at the end of the data.
    """
    size = len(data)
    marks = np.flatnonzero(a == 0xFF)
    marks = marks[marks + 2 < size]
    hits = marks[(a[marks + 1] == 0xD8) & (a[marks + 2] == 0xFF)]
    tail = [
        i for i in range(max(0, size - 2), size) if data[i:].startswith(b"\xff\xd8"[: size - i])
    ]
    for start in [*hits.tolist(), *tail]:
        segment = data[start + 3] if start + 3 < size else None
        if segment == 0xE0:
            if start + 11 > size:
                yield start, size + 1
            elif data[start + 6 : start + 11] == b"JFIF\x00":
                yield start, start + 11
        elif segment == 0xE1:
            if start + 12 > size:
                yield start, size + 1
            elif data[start + 6 : start + 12] == b"Exif\x00\x00":
                yield start, start + 12
        elif segment is None:
            yield start, size + 1
