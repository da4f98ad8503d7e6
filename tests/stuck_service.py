"""A service whose bus thread gets stuck in a read, under the real supervisor (tests only).

    python -m tests.stuck_service up CONFIG     the supervisor (`fieldkit up`) with this service
    python -m tests.stuck_service run CONFIG    the service itself, as the supervisor starts it

The service runs as any other does (``run_service``: READY=1, the watchdog heartbeat). When
the test creates ``stuck.trigger`` in the runtime dir, the service sends itself an event whose
handler opens a FIFO that nobody writes: the bus thread blocks there, as the wipe's scan did on
``/proc/kmsg`` (issue 15), while every other thread of the process runs on. The trigger is
taken once, so the restarted instance runs normally.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from fieldkit.bus import Incoming
from fieldkit.config import load_config
from fieldkit.logs import configure_logging
from fieldkit.messages import Ping
from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext, Supervisor, run_service

TRIGGER = "stuck.trigger"
FIFO = "stuck.fifo"


def setup(ctx: ServiceContext) -> None:
    runtime = ctx.config.bus.runtime_dir

    def read_forever(_: Ping, __: Incoming) -> None:
        with (runtime / FIFO).open("rb") as stream:  # blocks until a writer opens it
            stream.read()

    def wait_for_trigger() -> None:
        while not ctx.stopping.wait(0.1):
            with contextlib.suppress(FileNotFoundError):
                (runtime / TRIGGER).unlink()
                ctx.bus.publish("stuck/evt/read", Ping())
                return

    ctx.bus.handle_event("stuck/evt/read", Ping, read_forever)
    threading.Thread(target=wait_for_trigger, name="trigger", daemon=True).start()


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "tests.stuck_service", "run", str(config)]


STUCK = ServiceSpec(
    name="stuck",
    summary="a test service whose bus thread can be made to hang",
    setup=setup,
    listens=("stuck/evt/#",),
    command=command,
)


def main(argv: list[str]) -> int:
    action, config_path = argv
    configure_logging()
    config = load_config(Path(config_path))
    if action == "up":
        fifo = config.bus.runtime_dir / FIFO
        fifo.parent.mkdir(parents=True, exist_ok=True)
        if not fifo.exists():
            os.mkfifo(fifo)
        return Supervisor(config, Path(config_path), [STUCK]).run()
    return run_service(STUCK, config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
