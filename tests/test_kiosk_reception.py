"""The receipt's reception number: short digits with a Luhn check digit, from nothing personal,
unique per tablet and day, across a restart of the kiosk too. R5, issue 21 item 5"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from fieldkit.audit import AuditLog, entries
from fieldkit.config import DeviceConfig
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.reception import (
    JST,
    ReceptionNumbers,
    ReceptionNumbersExhausted,
    luhn_check_digit,
    luhn_valid,
)
from fieldkit.kiosk.settings import ContactDesk, KioskSection
from fieldkit.printing.messages import reception_grouped
from tests.support.kiosk import make_app, post, walk


def at(day: int, hour: int = 10) -> float:
    return datetime(2026, 11, day, hour, tzinfo=JST).timestamp()


def test_luhn_check_digit_matches_the_standard_examples() -> None:
    # ISO/IEC 7812-1 Annex B's example, and the common textbook one.
    assert luhn_check_digit("7992739871") == 3
    assert luhn_valid("79927398713")
    assert luhn_check_digit("0100007") == 4 and luhn_valid("01000074")


def test_a_misheard_digit_or_two_swapped_neighbours_fail_the_check() -> None:
    number = ReceptionNumbers("01", clock=lambda: at(23)).issue()
    assert len(number) == 7 and luhn_valid(number)
    for i in range(7):
        for digit in "0123456789":
            if digit != number[i]:
                assert not luhn_valid(number[:i] + digit + number[i + 1 :]), (i, digit)
    for i in range(6):
        swapped = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
        if swapped != number and {number[i], number[i + 1]} != {"0", "9"}:
            assert not luhn_valid(swapped), i


def test_numbers_are_unique_per_day_and_start_again_the_next_day() -> None:
    now = [at(23, 9)]
    numbers = ReceptionNumbers("07", clock=lambda: now[0])
    day = [numbers.issue() for _ in range(3)]
    assert day == ["0700013", "0700021", "0700039"]
    assert [reception_grouped(n) for n in day] == ["07-0001-3", "07-0002-1", "07-0003-9"]
    now[0] = at(23, 23) + 3599  # 23:59:59 in Japan: still the same day
    assert numbers.issue() == "0700047"
    now[0] = at(24, 0)
    assert numbers.issue() == "0700013"


def test_the_day_has_9999_numbers() -> None:
    trail = [{"event": {"action": "submitted", "at": at(23)}}] * 9998
    numbers = ReceptionNumbers("01", trail, clock=lambda: at(23))
    assert numbers.issue()[2:6] == "9999"
    with pytest.raises(ReceptionNumbersExhausted):
        numbers.issue()


def test_the_prefix_is_two_digits() -> None:
    with pytest.raises(ValueError, match="two digits"):
        ReceptionNumbers("1")
    with pytest.raises(ValueError):
        KioskSection(reception_prefix="1a")


def test_a_restarted_kiosk_goes_on_counting_from_its_audit_trail(
    kit_config: DeviceConfig, operator_hash: str, tmp_path: Path
) -> None:
    trail = tmp_path / "kiosk-audit.jsonl"
    # Yesterday's and today's numbers issued by the kiosk before this one.
    log = AuditLog(trail)
    yesterday = datetime.now(JST).timestamp() - 86400
    for when in (yesterday, yesterday, datetime.now(JST).timestamp()):
        log.append({"at": when, "operator": "op-01", "session": "s", "action": "submitted"})
    log.append({"at": yesterday, "operator": "op-01", "session": "s", "action": "wiped"})
    app = make_app(kit_config, operator_hash, audit_log=trail, reception_prefix="12")
    with app.test_client() as client:
        walk(client, app)
        post(client, "/submit", {}, page="/review")
        session = kiosk(app).counter.current
        assert session is not None
        assert session.reception_number is not None
        assert session.reception_number.startswith("120002")  # today's second
        assert luhn_valid(session.reception_number)
        # Nothing personal in it: not a digit run of the application ID.
        assert session.application_id is not None
        assert session.reception_number[2:6] not in session.application_id
    submitted = [e for e in entries(trail) if e["event"]["action"] == "submitted"]
    assert len(submitted) == 4


def test_the_done_page_shows_the_reception_number_and_where_it_went(
    kit_config: DeviceConfig, operator_hash: str
) -> None:
    app = make_app(kit_config, operator_hash)
    with app.test_client() as client:
        walk(client, app)
        post(client, "/submit", {}, page="/review")
        kiosk(app).counter.printed()  # no printing service attached in this test
        page = client.get("/done").get_data(as_text=True)
        number = kiosk(app).counter.current.reception_number  # type: ignore[union-attr]
        assert number is not None and reception_grouped(number) in page
        assert "受付番号" in page and "長野県長野市" in page
        # The session id is for the machines, not for people.
        assert kiosk(app).counter.current.sid not in page  # type: ignore[union-attr]
        # One tap finishes: no 「ありがとうございました。」 button before it.
        assert "ありがとうございました" not in page and "受付を終える(データを消去)" in page


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"phone": "0263-00-0000"}, "set both or neither"),
        ({"hours_ja": "平日 9時〜17時"}, "set both or neither"),
        ({"phone": "026300000", "hours_ja": "平日"}, "Japanese number with hyphens"),
        ({"phone": "0263-000-00000", "hours_ja": "平日"}, "Japanese number with hyphens"),
        ({"phone": "0263-0-000", "hours_ja": "平日"}, "10 or 11 digits"),
        ({"phone": "+81-263-00-0000", "hours_ja": "平日"}, "Japanese number with hyphens"),
    ],
)
def test_the_contact_desk_is_validated(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ContactDesk(**fields)


def test_a_valid_contact_desk_and_the_empty_default() -> None:
    assert not ContactDesk().configured
    for phone in ("0263-00-0000", "03-1234-5678", "0120-123-456", "050-1234-5678"):
        assert ContactDesk(phone=phone, hours_ja="平日 9時〜17時").configured


def test_reception_numbers_in_a_row_differ() -> None:
    numbers = ReceptionNumbers("01", clock=lambda: at(23))
    issued = [numbers.issue() for _ in range(50)]
    assert all(a != b for a, b in pairwise(issued)) and len(set(issued)) == 50
