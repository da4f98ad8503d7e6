"""What was read from a card is gone from the card service's memory after the session's forget,
and the wipe's own residue scan is what shows it. R6 R12 R23 (issue 22, docs/card.md)

The card service runs as on the kit (``python -m fieldkit.serve card``, freed memory
overwritten: ``fieldkit.processes``). A session reads a card; the wipe's process scan
(``fieldkit.wipe.catalogue.scan_process``) with the session's card canaries (the certificate's
serial and subject, ``fieldkit.wipe.markers.card_markers``) finds them in the service's memory
before the forget handshake (the check can fail), and finds nothing after it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldkit.wipe.catalogue import scan_process
from fieldkit.wipe.markers import MarkerSearch, session_markers
from tests.card_fixtures import (
    CardProcess,
    card_section,
    forget_session,
    read_when_placed,
    valid_certificate,
    wait_until_serving,
    wipe_stand_in,
)
from tests.conftest import BusFactory
from tests.support.pcsc import VirtualReader
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/mem").exists(), reason="needs /proc to read process memory"
)
SID = "0123456789abcdef0123456789abcdef"


def scan(pid: int, search: MarkerSearch) -> Counter[str]:
    hits, _, complete = scan_process(pid, search, 1 << 20)
    assert complete
    return Counter(hit.kind for hit in hits)


def test_the_wipe_scan_finds_the_card_canaries_before_forget_and_none_after(
    card_reader: VirtualReader,
    serve_card: Callable[[str], CardProcess],
    make_bus: BusFactory,
) -> None:
    wipe, markers = wipe_stand_in(make_bus)
    card = serve_card(card_section(card_reader.socket))
    wait_until_serving(make_bus)
    certificate = valid_certificate()
    card_reader.place("jpki", certificate.der)
    assert read_when_placed(make_bus("tester"), sid=SID, timeout=30).state == "ok"
    # The canaries the wipe gets from the card service are the certificate's own.
    wait_for(lambda: markers, 10, "the card markers at the wipe")
    assert bytes.fromhex(markers[0].card_serial_hex or "") == certificate.serial
    assert markers[0].card_subject == certificate.subject
    search = MarkerSearch(
        session_markers(None, [], None, [(certificate.serial, certificate.subject)])
    )
    assert {m.kind for m in search.markers} >= {"card-serial", "card-subject"}

    before = scan(card.process.pid, search)
    assert before["card-serial"] and before["card-subject"], before

    assert forget_session(make_bus, wipe, SID).ok
    after = scan(card.process.pid, search)
    assert after == Counter(), after
