"""The session wipe with a session that read a card: the card service answers the forget
handshake, the wipe scans for the card's canaries (the certificate's serial and subject, sent
by the card service) in the kit's memory, and the record passes. With the card service's
zeroing switched off, the same wipe finds the canaries and fails the record: the scan sees
what it is there to see. R6 R12 R23 (issue 22)

The card service runs as on the kit (``python -m fieldkit.serve card``, freed memory
overwritten), with the wipe's process tag in its command line (its config's path), so the
wipe's memory scan reads it as one of the kit's processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldkit.config import DeviceConfig
from fieldkit.runner import ServiceContext, stop_service
from fieldkit.wipe.messages import WipeResult, WipeSession
from fieldkit.wipe.service import Wiper
from tests.card_fixtures import (
    SERVE,
    CardProcess,
    card_section,
    read_when_placed,
    valid_certificate,
    wait_until_serving,
)
from tests.conftest import BusFactory, write_config
from tests.support.pcsc import VirtualReader
from tests.wipe_fixtures import SID, make_device, start_wipe

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/mem").exists(), reason="needs /proc to read process memory"
)
# The card service with its protection removed: it answers the forget but keeps what it read.
KEEPS_THE_READ = (
    "import sys; from fieldkit.card import service; "
    "service.CardDesk.forget = lambda self, sid: ['nothing: the read is kept']; "
    "from fieldkit.serve import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture
def wipe_device(
    broker: object, kit_config: DeviceConfig, tmp_path: Path
) -> Iterator[tuple[ServiceContext, Wiper, str]]:
    config, _, tag = make_device(tmp_path / "device")
    config = config.model_copy(update={"bus": kit_config.bus})
    ctx, wiper = start_wipe(config, ["card"])
    yield ctx, wiper, tag
    stop_service(ctx)


def start_card(tmp_path: Path, tag: str, socket: Path, zero: bool) -> CardProcess:
    # The broker's runtime folder is tmp_path/run (kit_config); the config file's folder
    # carries the wipe's process tag into the service's command line.
    text = write_config(tmp_path, card_section(socket)).read_text()
    config = tmp_path / tag / "device.toml"
    config.parent.mkdir()
    config.write_text(text)
    return CardProcess(config, tmp_path / "run", SERVE if zero else ("-c", KEEPS_THE_READ))


@pytest.mark.parametrize("zero", [True, False], ids=["protection-on", "protection-off"])
def test_the_session_wipe_proves_the_card_read_gone(
    zero: bool,
    wipe_device: tuple[ServiceContext, Wiper, str],
    card_reader: VirtualReader,
    make_bus: BusFactory,
    tmp_path: Path,
) -> None:
    _, wiper, tag = wipe_device
    card = start_card(tmp_path, tag, card_reader.socket, zero)
    try:
        wait_until_serving(make_bus)
        card_reader.place("jpki", valid_certificate().der)
        assert read_when_placed(make_bus("tester"), sid=SID, timeout=30).state == "ok"
        wipe = WipeSession(sid=SID, operator="op-01")
        # The card's canaries reached the wipe before the session ended (sent off the bus
        # thread just after the read): the kiosk's wipe request comes seconds later on a kit.
        result = make_bus("tester").request("wipe", "wipe-session", wipe, WipeResult, timeout=60)
    finally:
        card.stop()
    ((_, record),) = wiper.store.records()
    (holder,) = record.holders
    assert (holder.service, holder.answered, holder.ok) == ("card", True, True)
    memory = next(r for r in record.locations if r.name == "service-memory")
    scanned = [h for h in memory.holders or [] if str(card.process.pid) in str(h)]
    kinds = {f.kind for f in memory.findings}
    if zero:
        assert result.ok, result.failures
        assert memory.status == "clean" and not kinds
    else:
        # The same scan finds the card's canaries in the card service, and fails the record.
        assert not result.ok and result.failures == ["service-memory: residue (2 found)"]
        assert kinds == {"card-serial", "card-subject"}
        assert scanned, memory.holders
        assert all(f.where.startswith(f"pid:{card.process.pid} ") for f in memory.findings)
