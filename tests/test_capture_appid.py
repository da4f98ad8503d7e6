"""The application ID extractor: QR payloads and manual entry through one function. R1"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldkit.capture.appid import (
    ApplicationId,
    ApplicationIdRefused,
    combine_application_ids,
    read_application_id,
)
from tests.capture_scenes import OTHER_ID, TEST_ID

FULL_WIDTH = {0x30 + d: 0xFF10 + d for d in range(10)}  # ASCII digits -> full-width


@pytest.mark.parametrize(
    "payload",
    [
        f"https://net.kojinbango-card.go.jp/apply/?id={TEST_ID}",
        f"https://example.jp/a/b?v=2&x=17&shinseisho={TEST_ID}&p=3",
        TEST_ID,
        f"  {TEST_ID}\n",
        TEST_ID.encode("ascii"),
        f"申請書ID:{TEST_ID}".encode(),
        f"申請書ID:{TEST_ID}".encode("cp932"),  # Shift-JIS payload
        f"申請書ID\uff1a{TEST_ID.translate(FULL_WIDTH)}".encode("cp932"),
        b"\xef\xbb\xbf" + TEST_ID.encode(),  # UTF-8 BOM
        "1234 5678 9012 3456 7890 123",  # typed with spaces
        "1234-5678-9012-3456-7890-123",  # typed with hyphens
        TEST_ID.translate(FULL_WIDTH),  # typed with a Japanese IME
        f"{TEST_ID} {TEST_ID}",  # the same ID twice is still one ID
    ],
)
def test_the_id_is_taken_from_urls_bare_payloads_and_typed_entry(payload: str | bytes) -> None:
    assert read_application_id(payload).digits == TEST_ID


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("", "unreadable"),
        ("   ", "unreadable"),
        ("https://example.jp/product/4901234567894", "not-application-form"),
        ("WIFI:S:guest;T:WPA;P:secret;;", "not-application-form"),
        (TEST_ID[:22], "wrong-length"),
        (TEST_ID + "4", "wrong-length"),
        (f"https://example.jp/apply?id={TEST_ID}9", "wrong-length"),
        ("123456789012", "my-number"),
        ("1234 5678 9012", "my-number"),
        (f"https://example.jp/?a={TEST_ID}&b={OTHER_ID}", "several-ids"),
        ("1234567", "wrong-length"),
    ],
)
def test_anything_else_is_refused_with_a_reason_the_operator_can_act_on(
    payload: str, code: str
) -> None:
    with pytest.raises(ApplicationIdRefused) as refused:
        read_application_id(payload)
    assert refused.value.code == code
    assert refused.value.message_ja and refused.value.message_en
    # The refusal never quotes the payload or any digit run from it.
    assert not re.search(r"[0-9]{5,}", str(refused.value))


def test_the_id_object_does_not_show_its_digits_when_printed() -> None:
    found = read_application_id(TEST_ID)
    assert TEST_ID not in repr(found) and TEST_ID not in str(found)
    assert TEST_ID not in f"{found}"
    with pytest.raises(ValueError):
        ApplicationId("123")


def test_two_codes_with_different_ids_are_refused() -> None:
    one, other = read_application_id(TEST_ID), read_application_id(OTHER_ID)
    assert combine_application_ids([one, read_application_id(TEST_ID)]).digits == TEST_ID
    with pytest.raises(ApplicationIdRefused, match="several-ids"):
        combine_application_ids([one, other])


def _maximal_runs(text: str) -> set[str]:
    return set(re.findall(r"(?<![0-9])[0-9]+(?![0-9])", text))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_and_never_yields_a_wrong_id(payload: str) -> None:
    try:
        found = read_application_id(payload)
    except ApplicationIdRefused:
        return
    normalised = payload.translate({0xFF10 + d: 0x30 + d for d in range(10)})
    compact = re.sub(r"[ \-\u2010\uff0d\u30fc]", "", normalised.strip())
    # Accepted only if those 23 digits are in the payload as one whole run (or the whole
    # typed entry), and no other 23-digit run is there.
    assert found.digits in _maximal_runs(normalised) or compact == found.digits
    assert {r for r in _maximal_runs(normalised) if len(r) == 23} <= {found.digits}


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=60),
    st.text(max_size=60),
    st.from_regex(r"[0-9]{23}", fullmatch=True),
    st.sampled_from(["utf-8", "cp932"]),
)
def test_an_id_embedded_in_any_text_is_found_exactly(
    before: str, after: str, digits: str, encoding: str
) -> None:
    # Keep the ID a whole run: the surrounding text must not add digits next to it.
    before = re.sub(r"[0-9\uff10-\uff19]+$", "", before) + "?id="
    after = "&" + after
    payload = before + digits + after
    try:
        raw = payload.encode(encoding)
    except UnicodeEncodeError:
        raw = payload.encode("utf-8")
    try:
        found = read_application_id(raw)
    except ApplicationIdRefused as refused:
        # Only refusable if the random text itself holds another 23-digit run.
        assert refused.code == "several-ids"
        return
    assert found.digits == digits


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(payload: bytes) -> None:
    try:
        found = read_application_id(payload)
    except ApplicationIdRefused:
        return
    assert len(found.digits) == 23 and found.digits.isdigit()


@pytest.mark.parametrize(
    ("payload", "url"),
    [
        (b"https://app.example.invalid/apply?id=12345678901234567890123", True),
        (b"12345678901234567890123", False),
        ("ID 12345678901234567890123".encode("cp932"), False),
        (b"https://app.example.invalid/a b?id=12345678901234567890123", False),  # space
        (b"ftp://app.example.invalid/12345678901234567890123", False),
    ],
)
def test_the_online_link_is_kept_only_when_the_payload_is_one(payload: bytes, url: bool) -> None:
    from fieldkit.capture.appid import online_application_url

    assert (online_application_url(payload) is not None) is url
