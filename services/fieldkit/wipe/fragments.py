"""Photo fragments: the few short slices of a session's photo the wipe looks for.

A leaf (no Hyperscan, no numpy): the kiosk takes a session's fragments when it hands its
markers to the wipe, without loading the scanner into its web worker.
"""

from __future__ import annotations

import base64
import itertools

# How many bytes of the photo one fragment holds, and how many fragments a session gives.
FRAGMENT_BYTES = 48
FRAGMENTS = 3
# A fragment is varied enough to be the photo's own when it holds this many distinct byte
# values (random bytes: about 44 of 48) and no byte more than MAX_RUN times in a row.
MIN_DISTINCT_BYTES = 32
MAX_RUN = 3


def one_character_run(value: str) -> bool:
    """Whether ``value`` is one character repeated (a run of one digit, padding): in ASCII or
    UTF-16 a run that ordinary files hold."""
    return len(set(value)) <= 1


def varied(fragment: bytes) -> bool:
    """Whether a photo fragment's bytes are varied enough to be that photo's own."""
    wanted = min(MIN_DISTINCT_BYTES, len(fragment) * 2 // 3)
    if len(set(fragment)) < wanted:
        return False
    runs = (len(list(group)) for _, group in itertools.groupby(fragment))
    return max(runs, default=0) <= MAX_RUN


def photo_fragments(jpeg: bytes, count: int = FRAGMENTS) -> list[bytes]:
    """Slices from the photo's entropy-coded data: unique to that photo, unlike its headers.

    The slices start at ``count`` points spread over the data; where the bytes there are not
    varied (a flat area), the next FRAGMENT_BYTES window on is tried, wrapping round, so a
    plain photo gives fewer fragments, never a uniform one."""
    start = jpeg.rfind(b"\xff\xda")  # start of scan: what follows is the compressed image
    body_start = start + 16 if start >= 0 else len(jpeg) // 4
    body = jpeg[body_start : max(body_start, len(jpeg) - 2)]
    if len(body) < FRAGMENT_BYTES * count:
        return [bytes(body)] if len(body) >= 16 and varied(body) else []
    windows = len(body) // FRAGMENT_BYTES
    taken: list[int] = []
    for i in range(1, count + 1):
        first = (len(body) // (count + 1)) * i // FRAGMENT_BYTES
        for window in itertools.chain(range(first, windows), range(first)):
            at = window * FRAGMENT_BYTES
            if window not in taken and varied(body[at : at + FRAGMENT_BYTES]):
                taken.append(window)
                break
    return [bytes(body[w * FRAGMENT_BYTES : (w + 1) * FRAGMENT_BYTES]) for w in taken]


def fragments_b64(jpeg: bytes) -> list[str]:
    return [base64.b64encode(f).decode("ascii") for f in photo_fragments(jpeg)]
