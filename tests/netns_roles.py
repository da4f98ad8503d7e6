"""Processes for the network-namespace test: ``python -m tests.netns_roles ROLE SETTINGS_JSON``.

- ``ingest``: runs the hub ingest until SIGTERM.
- ``tablet``: runs a sync courier, submits ``count`` statistics records at ``interval`` seconds,
  appends each accepted record id to ``ids_file``, and keeps delivering until SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

from fieldkit.hub.ingest import Ingest
from fieldkit.hub.settings import HubSection
from fieldkit.logs import configure_logging
from fieldkit.sync.courier import Courier
from fieldkit.sync.settings import SyncSection
from tests.hubkit import statistics_body


def main() -> int:
    role, raw = sys.argv[1], json.loads(sys.argv[2])
    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if role == "ingest":
        ingest = Ingest(HubSection(**raw))
        ingest.start()
        stop.wait()
        ingest.stop()
        return 0
    courier = Courier(raw.pop("device"), SyncSection(**raw.pop("sync")))
    courier.start()
    ids = Path(raw["ids_file"])
    for i in range(int(raw["count"])):
        if stop.is_set():
            break
        record_id = courier.submit_record("statistics", statistics_body(i))
        with ids.open("a") as out:
            out.write(record_id + "\n")
        time.sleep(float(raw["interval"]))
    stop.wait()
    courier.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
