"""The tablet outbox on its own: durability across reopen, backoff, bounds, permissions. R12 R23"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from fieldkit.sync.outbox import DuplicateRecord, Outbox, OutboxFull


def rid(n: int) -> str:
    return f"{n:032x}"


def test_records_survive_a_reopen_with_their_state(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, max_records=100, max_bytes=10**6)
    for n in range(3):
        box.submit(rid(n), "statistics", b"x" * 10)
    box.take_due(1, ack_timeout=60, backoff_max=60)
    assert_private(tmp_path)  # from the first open on, WAL and shm included
    box.close()  # (SIGKILL is shown with a real process in test_sync_faults)
    again = Outbox(path, max_records=100, max_bytes=10**6)
    state = again.state()
    assert (state.pending, state.sent, state.bytes) == (2, 1, 30)
    assert again.acked([rid(0), rid(1)]) == 2
    assert again.state().acked_total == 2
    assert_private(tmp_path)
    again.close()


def assert_private(directory: Path) -> None:
    files = sorted(directory.glob("outbox.sqlite*"))
    assert [f.name for f in files] == ["outbox.sqlite", "outbox.sqlite-shm", "outbox.sqlite-wal"]
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_unacked_records_are_retried_with_growing_backoff(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_records=10, max_bytes=10**6)
    box.submit(rid(1), "audit", b"a")
    assert [r for r, _ in box.take_due(10, ack_timeout=0.2, backoff_max=10)] == [rid(1)]
    assert box.take_due(10, ack_timeout=0.2, backoff_max=10) == []  # waiting for its ack
    time.sleep(0.25)
    assert len(box.take_due(10, ack_timeout=0.2, backoff_max=10)) == 1  # resent once
    time.sleep(0.25)
    assert box.take_due(10, ack_timeout=0.2, backoff_max=10) == []  # now waits 0.4 s
    time.sleep(0.2)
    assert len(box.take_due(10, ack_timeout=0.2, backoff_max=10)) == 1
    box.retry_sent_now()  # after a reconnect
    assert len(box.take_due(10, ack_timeout=0.2, backoff_max=10)) == 1
    box.close()


def test_bounds_push_back_and_ids_are_unique(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_records=3, max_bytes=25)
    box.submit(rid(1), "audit", b"x" * 10)
    with pytest.raises(DuplicateRecord):
        box.submit(rid(1), "audit", b"y")
    box.submit(rid(2), "audit", b"x" * 10)
    with pytest.raises(OutboxFull):
        box.submit(rid(3), "audit", b"x" * 10)  # bytes bound
    assert box.state().full is False
    box.submit(rid(4), "audit", b"x")
    assert box.state().full is True  # records bound reached
    box.refused(rid(4), "bad")
    assert box.acked([rid(4)]) == 0  # a refused record is not removed by a stray ack
    assert box.acked([rid(1)]) == 1
    box.submit(rid(5), "audit", b"x")
    box.close()
