"""What the scanner looks for, and the streaming search itself.

A session scan looks for that session's own markers: its application ID (ASCII and UTF-16LE,
as Chromium's Local Storage keeps strings), fragments of its photo, and a per-session canary.
A daily scan looks for applicant data of any session: the 23-digit application-ID pattern and
the JPEG headers the photo pipeline writes. Findings name the kind of marker, never its value.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

# A 23-digit application ID, in ASCII or UTF-16LE; found by mapping every digit to "0" and
# searching for a run of zeros, which runs at memory speed where a regular expression would
# test every position.
ID_DIGITS = 23
DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
# The photo pipeline (OpenCV) writes JFIF; cameras and other tools write EXIF.
JPEG_SOI = b"\xff\xd8\xff"
# Bytes around a match that its boundary checks may look at (one UTF-16 code unit).
CONTEXT = 2
# How many bytes of the photo one fragment holds, and how many fragments a session gives.
FRAGMENT_BYTES = 48
FRAGMENTS = 3


@dataclass(frozen=True)
class Marker:
    """One thing to look for: ``kind`` is what a finding reports; ``pattern`` is never shown."""

    kind: str
    pattern: bytes  # the exact bytes for a literal; unused for the other finders
    max_length: int
    finder: Literal["literal", "digits", "digits-utf16", "jpeg"] = "literal"


def literal(kind: str, value: bytes) -> Marker:
    return Marker(kind, value, len(value))


def session_markers(
    application_id: str | None, photo_fragments: Iterable[bytes], canary: str | None
) -> list[Marker]:
    """The markers of one session, from what the kiosk told the wipe about it."""
    markers: list[Marker] = []
    if application_id:
        markers.append(literal("application-id", application_id.encode("ascii")))
        markers.append(literal("application-id-utf16", application_id.encode("utf-16-le")))
    for fragment in photo_fragments:
        if fragment:
            markers.append(literal("photo", fragment))
    if canary:
        markers.append(literal("canary", canary.encode("ascii")))
        markers.append(literal("canary-utf16", canary.encode("utf-16-le")))
    return markers


def daily_markers() -> list[Marker]:
    """Applicant data of any session."""
    return [
        Marker("application-id-pattern", b"", ID_DIGITS + 1, "digits"),
        Marker("application-id-pattern-utf16", b"", 2 * ID_DIGITS + 2, "digits-utf16"),
        Marker("jpeg", b"", 12, "jpeg"),
    ]


def photo_fragments(jpeg: bytes, count: int = FRAGMENTS) -> list[bytes]:
    """Slices from the photo's entropy-coded data: unique to that photo, unlike its headers."""
    start = jpeg.rfind(b"\xff\xda")  # start of scan: what follows is the compressed image
    body_start = start + 16 if start >= 0 else len(jpeg) // 4
    body = jpeg[body_start : max(body_start, len(jpeg) - 2)]
    if len(body) < FRAGMENT_BYTES * count:
        return [bytes(body)] if len(body) >= 16 else []
    step = len(body) // (count + 1)
    return [bytes(body[step * i : step * i + FRAGMENT_BYTES]) for i in range(1, count + 1)]


def fragments_b64(jpeg: bytes) -> list[str]:
    return [base64.b64encode(f).decode("ascii") for f in photo_fragments(jpeg)]


@dataclass(frozen=True)
class Hit:
    kind: str
    offset: int


class MarkerSearch:
    """Searches bytes and streams in chunks; every finder runs at C speed over a chunk."""

    def __init__(self, markers: list[Marker]) -> None:
        self.markers = markers
        self._literals = [(m.kind, m.pattern) for m in markers if m.finder == "literal"]
        self._special = [(m.kind, m.finder) for m in markers if m.finder != "literal"]
        # A match may straddle two chunks: keep this many bytes of the previous one. A match
        # is judged only with CONTEXT bytes on each side (or at the very start or end of the
        # data), and the carry is long enough that every match is judged in some buffer.
        self.carry = max((m.max_length for m in markers), default=0) + 4 * CONTEXT

    def _matches(self, data: bytes) -> Iterator[tuple[str, int, int]]:
        for kind, value in self._literals:
            start = data.find(value)
            while start >= 0:
                yield kind, start, start + len(value)
                start = data.find(value, start + 1)
        if not self._special:
            return
        zeros = (
            data.translate(DIGITS_TO_ZERO) if any(f != "jpeg" for _, f in self._special) else b""
        )
        for kind, finder in self._special:
            if finder == "digits":
                yield from ((kind, s, e) for s, e in _digit_runs(zeros, b"0", ID_DIGITS))
            elif finder == "digits-utf16":
                yield from ((kind, s, e) for s, e in _digit_runs(zeros, b"0\x00", ID_DIGITS))
            else:
                yield from ((kind, s, e) for s, e in _jpeg_headers(data))

    def search_bytes(self, data: bytes) -> list[Hit]:
        return [Hit(k, start) for k, start, end in self._matches(data) if end <= len(data)]

    def search_stream(
        self, stream: BinaryIO, chunk_bytes: int, limit: int
    ) -> tuple[list[Hit], int]:
        """Hits in the stream (up to ``limit`` bytes) and the number of bytes read."""
        hits: list[Hit] = []
        seen: set[tuple[str, int]] = set()
        tail = b""
        base = 0  # absolute offset of tail[0]
        read = 0
        while read < limit:
            chunk = stream.read(min(chunk_bytes, limit - read))
            eof = not chunk
            read += len(chunk)
            data = tail + chunk
            for kind, start, end in self._matches(data):
                # A match touching the end may still grow, or its boundary check may change,
                # once the next chunk arrives: it is judged then, from the carried tail.
                last = eof or read >= limit
                if end > len(data) or (base > 0 and start < CONTEXT):
                    continue
                if not last and end > len(data) - CONTEXT:
                    continue
                key = (kind, base + start)
                if key not in seen:
                    seen.add(key)
                    hits.append(Hit(kind, base + start))
            if eof:
                break
            keep = min(len(data), self.carry)
            base += len(data) - keep
            tail = data[len(data) - keep :]
        return hits, read


def _digit_runs(zeros: bytes, unit: bytes, count: int) -> Iterator[tuple[int, int]]:
    """Runs of exactly ``count`` digits (each ``unit`` wide) in digit-mapped bytes.

    A run touching the end of the buffer is yielded with its end at the buffer's end, so
    the stream search defers it until it knows whether the run goes on.
    """
    needle = unit * count
    width = len(unit)
    size = len(zeros)
    start = zeros.find(needle)
    while start >= 0:
        if start >= width and zeros[start - width : start] == unit:
            start = zeros.find(needle, start + width)  # inside a longer run: not an ID
            continue
        end = start + len(needle)
        if zeros[end : end + width] == unit:
            # Longer than an ID: skip past the whole run.
            stop = end
            while zeros[stop : stop + width] == unit:
                stop = (
                    stop + len(needle)
                    if zeros[stop : stop + len(needle)] == needle
                    else stop + width
                )
            start = zeros.find(needle, stop)
            continue
        yield start, (size if end + width > size else end)
        start = zeros.find(needle, end)


def _jpeg_headers(data: bytes) -> Iterator[tuple[int, int]]:
    """JPEG start-of-image followed by a JFIF or EXIF application segment.

    A header cut off by the end of the buffer is yielded as ending past it, so the stream
    search judges it with the next chunk and drops it at the end of the data.
    """
    size = len(data)
    start = data.find(JPEG_SOI)
    while start >= 0:
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
        start = data.find(JPEG_SOI, start + 1)
