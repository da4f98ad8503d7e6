"""The card service reads a My Number Card's user-authentication certificate through a real
pcscd and the virtual reader, without a PIN, and says plainly what it found. R9 R20 (issue 22)

The card is emulated per the public JPKI-AP specification (``tests/support/jpki_card.py`` on
virtualsmartcard's VirtualICC); its certificates are made by a test CA.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

import pytest

from fieldkit.broker import LocalBroker
from fieldkit.bus import RequestRefused
from fieldkit.card import jpki
from fieldkit.card.messages import CardReport, ReadCard
from fieldkit.card.reader import read_card
from fieldkit.runner import ServiceContext
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
from tests.support.jpki_certs import ISSUER_TEXT, user_auth_certificate
from tests.support.pcsc import SLOT_0, VirtualReader
from tests.support.waiting import wait_for

SID = "c0ffee" + "0" * 25 + "1"
JST = dt.timezone(dt.timedelta(hours=9))
# What a reader may send a card: SELECT JPKI-AP, SELECT the certificate EF, READ BINARY.
ALLOWED = ("00a4040c d392f000260100000001", "00a4020c 000a", "00b0")


def only_the_certificate_was_asked_for(card_reader: VirtualReader) -> None:
    apdus = card_reader.apdus()
    assert apdus, "the card received nothing"
    assert all(a.startswith(ALLOWED) for a in apdus), apdus
    assert not any(a[2:4] == "20" for a in apdus), "a VERIFY (PIN) was sent"


def test_a_valid_my_number_card_is_read_without_a_pin(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    certificate = valid_certificate(days=1214)
    card_reader.place("jpki", certificate.der)
    report = read_when_placed(make_bus("tester"))
    assert report.state == "ok"
    assert (report.present, report.readable, report.my_number_card) == (True, True, True)
    assert report.reader == SLOT_0
    assert report.certificate is not None
    today = dt.datetime.now(JST).date()
    assert report.certificate.valid_to == (today + dt.timedelta(days=1214)).isoformat()
    assert report.certificate.valid_from == (today - dt.timedelta(days=400)).isoformat()
    assert report.certificate.days_left == 1214
    assert not report.certificate.expired and not report.certificate.not_yet_valid
    assert report.certificate.issuer == ISSUER_TEXT
    only_the_certificate_was_asked_for(card_reader)
    # The holder's side of the certificate never travels in a report.
    payload = report.encode()
    assert certificate.subject.encode() not in payload
    assert certificate.serial.hex().encode() not in payload.lower()


def test_an_expired_certificate_is_read_and_said_expired(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    today = dt.datetime.now(JST).date()
    card_reader.place(
        "jpki", user_auth_certificate(dt.date(2019, 4, 1), today - dt.timedelta(days=3)).der
    )
    report = read_when_placed(make_bus("tester"))
    assert report.state == "ok" and report.certificate is not None
    assert report.certificate.expired
    assert report.certificate.days_left == -3


def test_a_card_without_jpki_is_not_a_my_number_card(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    card_reader.place("other")
    report = read_when_placed(make_bus("tester"))
    assert report.state == "not-jpki"
    assert (report.present, report.my_number_card, report.certificate) == (True, False, None)
    # It was asked for JPKI-AP only: nothing else was selected on someone else's card.
    assert card_reader.apdus() == ["00a4040c d392f000260100000001"]


def test_a_card_that_refuses_every_command_is_not_taken_for_a_my_number_card(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    card_reader.place("mute")
    report = read_when_placed(make_bus("tester"))
    assert report.state == "not-jpki"  # 6F00 to the SELECT: no JPKI application answered


def test_a_jpki_card_whose_certificate_file_is_not_a_certificate_is_unreadable(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    card_reader.place("jpki", b"\x04\x82\x01\x00" + bytes(range(256)))
    report = read_when_placed(make_bus("tester"))
    assert (report.state, report.present, report.readable) == ("unreadable", True, False)
    assert report.my_number_card is False  # not told so without a certificate read


def test_a_certificate_file_with_a_certificate_length_but_no_certificate_is_unreadable(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    card_reader.place("jpki", b"\x30\x82\x01\x00" + bytes(range(256)))
    report = read_when_placed(make_bus("tester"))
    assert report.state == "unreadable"


def test_a_card_taken_out_mid_read_is_said_removed(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    card_reader.place("jpki", valid_certificate().der, remove_after=3)
    report = read_when_placed(make_bus("tester"))
    assert report.state == "removed"
    assert report.certificate is None
    # And the next read finds the reader empty, without a crash in between.
    assert make_bus("tester").request("card", "read", ReadCard(), CardReport).state == "no-card"


def test_an_empty_reader_says_no_card(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    report = make_bus("tester").request("card", "read", ReadCard(), CardReport)
    assert (report.state, report.present, report.readable) == ("no-card", False, False)


def test_two_readers_and_none_chosen_is_said_so(card_reader: VirtualReader) -> None:
    # vpcd gives each reader.conf entry two slots: two readers, as with a second one plugged in.
    assert read_card(None).state == "several-readers"
    assert read_card("no such reader").state == "no-reader"


def test_a_bad_read_request_is_refused_naming_the_field(
    card_service: ServiceContext, make_bus: BusFactory, broker: LocalBroker
) -> None:
    with pytest.raises(RequestRefused, match="sid"):
        make_bus("tester").request(
            "card", "read", ReadCard.model_construct(sid="not a session"), CardReport
        )


def test_no_reader_connected(
    serve_card: Callable[[str], CardProcess],
    make_bus: BusFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with VirtualReader(tmp_path_factory.mktemp("pcscd-empty"), readers=False) as empty:
        serve_card(card_section(empty.socket, reader=None))
        assert wait_until_serving(make_bus).state == "no-reader"


def test_no_pcscd(
    serve_card: Callable[[str], CardProcess],
    make_bus: BusFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    socket = tmp_path_factory.mktemp("no-pcscd") / "pcscd.comm"
    serve_card(card_section(socket))
    assert wait_until_serving(make_bus).state == "no-service"


def test_a_session_read_is_forgotten_and_its_canaries_go_to_the_wipe(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:  # R6
    wipe, received = wipe_stand_in(make_bus)
    certificate = valid_certificate()
    card_reader.place("jpki", certificate.der)
    assert read_when_placed(make_bus("tester"), sid=SID).state == "ok"
    wait_for(lambda: received, 10, "the card markers at the wipe")
    assert received[0].sid == SID
    assert received[0].card_serial_hex == certificate.serial.hex()
    assert received[0].card_subject == certificate.subject
    answer = forget_session(make_bus, wipe, SID)
    assert answer.ok and answer.service == "card"
    assert answer.erased == ["card certificates read in the session (1), zeroed"]


def test_der_length_refuses_what_is_not_a_certificate() -> None:
    assert jpki.der_length(bytes.fromhex("30820356")) == 4 + 0x356
    assert jpki.der_length(bytes.fromhex("3081f0") + b"\0") == 3 + 0xF0
    for bad in (b"", bytes.fromhex("31820356"), bytes.fromhex("3003"), bytes.fromhex("3082ffff")):
        with pytest.raises(jpki.JpkiError):
            jpki.der_length(bad)
    with pytest.raises(ValueError, match="offset"):
        jpki.read_binary(0x8000, 4)
    assert jpki.read_binary(0x0104, 256) == bytes.fromhex("00b0010400")


def test_reads_are_timed(
    card_reader: VirtualReader, card_service: ServiceContext, make_bus: BusFactory
) -> None:
    card_reader.place("jpki", valid_certificate().der)
    started = time.monotonic()
    report = read_when_placed(make_bus("tester"))
    assert 0 < report.seconds < time.monotonic() - started + 0.01


def test_no_log_line_carries_the_certificates_subject_or_serial(
    card_reader: VirtualReader,
    card_service: ServiceContext,
    make_bus: BusFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:  # R23
    caplog.set_level(logging.DEBUG)
    wipe, received = wipe_stand_in(make_bus)
    certificate = valid_certificate()
    card_reader.place("jpki", certificate.der, remove_after=4)
    assert read_when_placed(make_bus("tester"), sid=SID).state == "removed"
    card_reader.place("jpki", certificate.der)
    assert read_when_placed(make_bus("tester"), sid=SID).state == "ok"
    wait_for(lambda: received, 10, "the card markers at the wipe")
    forget_session(make_bus, wipe, SID)
    text = caplog.text.lower()
    assert "card read: removed" in text  # the log says what happened ...
    assert certificate.subject.lower() not in text  # ... and never whose card it was
    assert certificate.serial.hex() not in text
