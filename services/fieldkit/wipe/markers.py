"""What the scanner looks for, and the streaming search itself.

A session scan looks for that session's own markers: its application ID (ASCII and UTF-16LE,
as Chromium's Local Storage keeps strings), fragments of its photo, and a per-session canary.
A daily scan looks for applicant data of any session: the 23-digit application-ID pattern and
the JPEG headers the photo pipeline writes. Findings name the kind of marker, never its value.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

# The photo pipeline (OpenCV) writes JFIF; cameras and other tools write EXIF.
JPEG_JFIF = rb"\xff\xd8\xff\xe0..JFIF\x00"
JPEG_EXIF = rb"\xff\xd8\xff\xe1..Exif\x00\x00"
APPLICATION_ID_ASCII = rb"(?<![0-9])[0-9]{23}(?![0-9])"
APPLICATION_ID_UTF16 = rb"(?<![0-9]\x00)(?:[0-9]\x00){23}(?![0-9]\x00)"
# How many bytes of the photo one fragment holds, and how many fragments a session gives.
FRAGMENT_BYTES = 48
FRAGMENTS = 3


@dataclass(frozen=True)
class Marker:
    """One thing to look for: ``kind`` is what a finding reports; ``pattern`` is never shown."""

    kind: str
    pattern: bytes  # the exact bytes, or a regular expression over bytes when ``regex``
    max_length: int
    regex: bool = False


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
        Marker("application-id-pattern", APPLICATION_ID_ASCII, 24, regex=True),
        Marker("application-id-pattern-utf16", APPLICATION_ID_UTF16, 48, regex=True),
        Marker("jpeg-jfif", JPEG_JFIF, 11, regex=True),
        Marker("jpeg-exif", JPEG_EXIF, 12, regex=True),
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
    """Searches streams in chunks: literals with ``bytes.find``, patterns as one expression."""

    def __init__(self, markers: list[Marker]) -> None:
        self.markers = markers
        self._literals = [(m.kind, m.pattern) for m in markers if not m.regex]
        patterns = [m for m in markers if m.regex]
        self._kinds = [m.kind for m in patterns]
        if patterns:
            groups = b"|".join(b"(" + m.pattern + b")" for m in patterns)
            self._expr: re.Pattern[bytes] | None = re.compile(groups, re.DOTALL)
        else:
            self._expr = None
        # A match may straddle two chunks: keep this many bytes of the previous one (with one
        # extra byte of context on each side for the look-arounds).
        self.carry = max((m.max_length for m in markers), default=0) + 2

    def _matches(self, data: bytes) -> Iterator[tuple[str, int, int]]:
        for kind, value in self._literals:
            start = data.find(value)
            while start >= 0:
                yield kind, start, start + len(value)
                start = data.find(value, start + 1)
        if self._expr is None:
            return
        for match in self._expr.finditer(data):
            index = match.lastindex or 1
            yield self._kinds[index - 1], match.start(), match.end()

    def search_bytes(self, data: bytes) -> list[Hit]:
        return [Hit(kind, start) for kind, start, _ in self._matches(data)]

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
                # A match touching the end may still grow, or its look-ahead may change, once
                # the next chunk arrives: it is judged then, from the carried tail.
                if end >= len(data) and not eof and read < limit:
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
