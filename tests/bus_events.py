"""What a test sees on the bus: every message under a filter, and waiting for one that matches.

One collector for every suite (pass it to ``Bus.observe`` or ``handle_event``'s raw form);
the suites differ only in how they pick the message they wait for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Seen = tuple[str, bytes, bool]  # topic, payload, retained


class BusEvents:
    def __init__(self) -> None:
        self.items: list[Seen] = []
        self.changed = threading.Condition()

    def __call__(self, topic: str, payload: bytes, retained: bool) -> None:
        with self.changed:
            self.items.append((topic, payload, retained))
            self.changed.notify_all()

    def wait_until(
        self, pick: Callable[[list[Seen]], T | None], timeout: float = 20.0, what: str = ""
    ) -> T:
        """The first non-None ``pick(items)``, re-tried as messages arrive, until ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = pick(self.items)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = [topic for topic, _, _ in self.items]
                    raise AssertionError(f"never saw {what or 'the message'} (saw {topics})")
                self.changed.wait(left)

    def wait_any(self, timeout: float = 5.0) -> Seen:
        """The first message seen."""
        return self.wait_until(lambda items: items[0] if items else None, timeout, "a message")
