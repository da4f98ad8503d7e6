"""Benchmark of the card service (R9, R20): card placed -> answer, and read -> answer.

Run: ``.venv/bin/python bench/card.py [--rounds N]`` (as root: it starts its own pcscd in a
private mount namespace with the virtual reader, tests/support/pcsc.py, and a mosquitto on
loopback). Each figure is printed with a baseline measured in the same run and the ratio:

- read -> report     the kiosk's ``card/req/card/read`` to the CardReport, a card in place
                     vs  one bare PC/SC transmit round trip (SELECT JPKI-AP on an open handle)
                     vs  a bare bus round trip (``ping``) to the same service
- placed -> report   the virtual card connects to the reader; the kiosk asks every 50 ms
                     until the report is "ok" (pcscd sees a card at its next poll, 400 ms)
                     vs  the same bare transmit

The card is emulated (virtualsmartcard over vpcd's TCP socket): a real CCID reader and card
are slower per APDU (T=1 at the card's baud rate), so the ratio, not the milliseconds, is the
figure to compare with a device.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus, Endpoint, read_password
from fieldkit.card import SERVICE
from fieldkit.card.jpki import select_jpki_ap
from fieldkit.card.messages import CardReport, ReadCard
from fieldkit.config import DeviceConfig
from fieldkit.messages import Ping, Pong
from fieldkit.registry import Identity, identities_for, load_specs
from fieldkit.runner import start_service, stop_service

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.* helpers, run as `.venv/bin/python bench/NAME.py`

from bench.samples import report, timed  # noqa: E402
from tests.support.jpki_certs import user_auth_certificate  # noqa: E402
from tests.support.pcsc import SLOT_0, VirtualReader, missing_parts  # noqa: E402

TESTER = Identity(name="tester", writes=("tester/req/#",), reads=("+/rep/tester", "+/error"))
POLL = 0.05


def bare_transmit(rounds: int) -> list[float]:
    """One APDU on an open PC/SC handle: the floor under every read."""
    from smartcard import scard

    _, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    _, card, protocol = scard.SCardConnect(
        context, SLOT_0, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
    )
    apdu = list(select_jpki_ap())
    try:
        return timed(lambda: scard.SCardTransmit(card, protocol, apdu), rounds)
    finally:
        scard.SCardDisconnect(card, scard.SCARD_RESET_CARD)
        scard.SCardReleaseContext(context)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--placements", type=int, default=8)
    args = parser.parse_args()
    problem = missing_parts()
    if problem:
        raise SystemExit(f"bench/card.py: {problem}; run ./dev.sh")
    work = Path(tempfile.mkdtemp(prefix="fieldkit-bench-card-"))
    (work / "pcsc").mkdir()
    reader = VirtualReader(work / "pcsc").start()
    os.environ["PCSCLITE_CSOCK_NAME"] = str(reader.socket)
    runtime = work / "run"
    runtime.mkdir()
    broker = LocalBroker(runtime, [*identities_for(load_specs()), TESTER], Endpoint(port=0))
    broker.start()
    config = DeviceConfig.model_validate(
        {
            "device": {"id": "bench-tablet"},
            "bus": {"port": broker.endpoint.port, "runtime_dir": str(runtime)},
            "card": {"pcscd_socket": str(reader.socket), "reader": SLOT_0},
        }
    )
    ctx = start_service(SERVICE, config)
    tester = Bus("tester", broker.endpoint, read_password(runtime, "tester"), announce_health=False)
    tester.connect()
    today = dt.date.today()
    der = user_auth_certificate(today, today + dt.timedelta(days=1214)).der
    print(
        f"fieldkit card benchmark: {args.rounds} reads, {args.placements} placements "
        f"(certificate {len(der)} bytes)"
    )
    try:
        reader.place("jpki", der)
        reader.wait_present()

        def read() -> CardReport:
            answer = tester.request("card", "read", ReadCard(), CardReport)
            if answer.state != "ok":
                raise SystemExit(f"the card was not read: {answer.state}")
            return answer

        reads = timed(read, args.rounds)
        apdus = len(reader.apdus()) // (args.rounds + 1)
        transmit = bare_transmit(args.rounds)
        ping = timed(lambda: tester.request("card", "ping", Ping(), Pong), args.rounds)
        placed: list[float] = []
        for _ in range(args.placements):
            reader.place("jpki", der)
            at = reader.placed_at()
            while tester.request("card", "read", ReadCard(), CardReport).state != "ok":
                time.sleep(POLL)
            placed.append(time.time() - at)
        binaries = apdus - 2
        print(f"(a read: {apdus} APDUs, SELECT JPKI-AP, SELECT EF 000A, READ BINARY x{binaries})")
        report("read -> report", reads, transmit, "bare transmit")
        report("read -> report", reads, ping, "bus ping")
        report("placed -> report", placed, transmit, "bare transmit")
    finally:
        tester.close()
        stop_service(ctx)
        broker.stop()
        reader.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
