"""Rendering in memory: receipt text and copies (R5), photo geometry (R3), plain printer words."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fieldkit.printing.condition import read_condition
from fieldkit.printing.photosheet import (
    PhotoRefused,
    check_master,
    layout_for,
    render_photo_sheet,
)
from fieldkit.printing.receipt import render_receipt, wrap
from fieldkit.printing.settings import DEFAULT_FONT
from fieldkit.wipe.fragments import photo_fragments
from fieldkit.wipe.markers import MarkerSearch, daily_markers, session_markers
from tests.cups import page_sizes_mm, placed_images
from tests.support.printing import APPLICATION_ID, SID, sample_jpeg, sample_receipt


def text_of(pdf: bytes, page: int) -> str:
    cmd = ["pdftotext", "-layout", "-enc", "UTF-8", "-f", str(page), "-l", str(page), "-", "-"]
    return subprocess.run(cmd, input=pdf, capture_output=True, check=True).stdout.decode()


def test_receipt_has_two_copies_labelled_for_applicant_and_staff() -> None:
    """R5: two copies, labelled differently, each with every item of the application."""
    pdf = render_receipt(sample_receipt(), DEFAULT_FONT)
    assert len(page_sizes_mm(pdf)) == 2
    first, second = text_of(pdf, 1), text_of(pdf, 2)
    assert "本人控え" in first and "職員控え" not in first
    assert "職員控え" in second and "本人控え" not in second
    for page in (first, second):
        assert "申請情報の控え" in page
        assert "2026年11月23日 10:30" in page  # 01:30 UTC shown in Japan time
        assert "千代田区ふれあい会館" in page
        assert "申請サポート方式" in page
        assert "電子証明書" in page and "希望する" in page
        assert "点字" in page and "希望しない" in page
        assert "op-007" in page
        # Issue 21: the ID in the form's groups, a reception number staff read out (never the
        # session id), where the application went, and whom to call.
        assert "1234 5678 9012 3456 7890 123" in page
        assert "受付番号" in page and "01-0007-3" in page
        assert SID not in page
        assert "申請先" in page and "長野県松本市" in page
        assert "0263-00-0000" in page and "平日 9時〜17時" in page
        assert "交付通知書" in page  # what happens next, for support mode
        assert "長野県松本市から交付通知書" in "".join(page.split())


def test_receipt_guidance_follows_the_mode() -> None:
    pdf = render_receipt(sample_receipt(mode="municipal", braille=True), DEFAULT_FONT)
    text = text_of(pdf, 1)
    assert "出張申請受付方式" in text
    assert "本人限定受取郵便" in text
    assert "交付通知書" not in text


def test_a_receipt_without_a_contact_leaves_the_contact_out() -> None:
    pdf = render_receipt(sample_receipt(contact_phone="", contact_hours_ja=""), DEFAULT_FONT)
    text = text_of(pdf, 1)
    assert "お問い合わせ" not in text and "お電話ください" not in text
    assert "01-0007-3" in text


def test_receipt_embeds_its_japanese_font() -> None:
    """The printer needs no Japanese font of its own: the glyphs travel in the PDF."""
    pdf = render_receipt(sample_receipt(), DEFAULT_FONT)
    fonts = subprocess.run(["pdffonts", "-"], input=pdf, capture_output=True, check=True)
    line = next(x for x in fonts.stdout.decode().splitlines() if "IPAexGothic" in x)
    assert " yes yes yes " in f" {' '.join(line.split()[-5:-2])} "  # emb sub uni


def test_receipt_metadata_carries_nothing_about_the_applicant() -> None:
    pdf = render_receipt(sample_receipt(), DEFAULT_FONT)
    info = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True, check=True)
    assert APPLICATION_ID not in info.stdout.decode()
    assert "fieldkit" in info.stdout.decode()  # the info was read: the check can see it


def test_japanese_text_wraps_between_characters() -> None:
    from fieldkit.printing.fonts import japanese_font

    font = japanese_font(DEFAULT_FONT)
    lines = wrap("あ" * 50 + " English words stay whole", font, 10, 100)
    assert all(len(line) <= 10 for line in lines[:5])
    assert "English" in "".join(lines) and not any(line.endswith("Engl") for line in lines)


@pytest.mark.parametrize(
    ("paper", "size", "capacity"), [("l", (88.9, 127.0), 4), ("a4", (210.0, 297.0), 20)]
)
def test_photo_sheet_places_the_master_at_exactly_45_by_35_mm(
    paper: str, size: tuple[float, float], capacity: int
) -> None:
    """R3: every copy measures 35.0 × 45.0 mm (w × h), and the JPEG is embedded untouched."""
    assert layout_for(paper).capacity == capacity  # type: ignore[arg-type]
    pdf = render_photo_sheet(sample_jpeg(), paper, capacity, DEFAULT_FONT)  # type: ignore[arg-type]
    (page,) = page_sizes_mm(pdf)
    assert page == pytest.approx(size, abs=0.05)
    photos = placed_images(pdf)
    assert len(photos) == capacity
    for photo in photos:
        assert photo.width_mm == pytest.approx(35.0, abs=0.1)
        assert photo.height_mm == pytest.approx(45.0, abs=0.1)
        assert photo.pixels == (827, 1063)
        # Inside the page with room for the cut marks (1 mm gap + 3 mm mark) on every side.
        assert photo.x_mm >= 4 and photo.x_mm + photo.width_mm <= page[0] - 4
        assert photo.y_mm >= 4 and photo.y_mm + photo.height_mm <= page[1] - 4
    listing = subprocess.run(["pdfimages", "-list", "-"], input=pdf, capture_output=True)
    if listing.returncode == 0:  # older poppler cannot read stdin; the placement check stands
        assert " jpeg " in listing.stdout.decode()


@pytest.mark.parametrize(
    ("jpeg", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n", "not a JPEG"),
        (b"\xff\xd8\xff\xe0garbage", "not a readable JPEG"),
        (sample_jpeg(300, 386), "at least 413 px"),
        (sample_jpeg(827, 827), "cropped to 35:45"),
        (sample_jpeg(827, 1063, "CMYK"), "RGB or greyscale"),
    ],
)
def test_a_master_that_cannot_print_true_to_size_is_refused(jpeg: bytes, reason: str) -> None:
    with pytest.raises(PhotoRefused, match=reason):
        check_master(jpeg)


def test_greyscale_master_is_accepted() -> None:
    """Black-and-white photos are allowed for the paper form."""
    assert check_master(sample_jpeg(mode="L")) == (827, 1063)


@pytest.mark.parametrize(
    ("state", "reasons", "condition"),
    [
        (3, ["none"], "ready"),
        (4, ["none"], "printing"),
        (4, ["media-empty-error"], "out-of-paper"),
        (5, ["media-needed"], "out-of-paper"),
        (4, ["connecting-to-device"], "offline"),
        (5, ["offline-report"], "offline"),
        (5, ["paused"], "paused"),
        (4, ["media-jam-error"], "paper-jam"),
        (4, ["cover-open-warning"], "door-open"),
        (4, ["toner-empty-error"], "out-of-ink"),
        (3, ["other-error"], "error"),
        (5, [], "error"),
    ],
)
def test_printer_reasons_become_plain_words(state: int, reasons: list[str], condition: str) -> None:
    reading = read_condition(state, reasons)
    assert reading.condition == condition
    assert reading.words_ja and reading.words_en
    assert not any(r in reading.words_ja for r in reasons if r)  # no IPP jargon on screen


def test_a_refused_connection_reads_as_offline_while_a_job_waits() -> None:
    """The ipp backend says so only in printer-state-message (seen with a switched-off printer)."""
    message = "The printer may not exist or is unavailable at this time."
    assert read_condition(4, ["none"], message).condition == "offline"
    assert read_condition(4, ["none"], "Printing page 1").condition == "printing"


def test_the_spooled_photo_sheet_holds_the_photo_as_the_wipe_scan_sees_it() -> None:
    """R12: the PDF cupsd spools carries the JPEG's own bytes (no ASCII85), so the wipe's
    session scan (slices of the photo) and daily scan (JPEG headers) can find a sheet left
    in the spool. With reportlab's default ASCII85 wrapping neither finds anything."""
    jpeg = sample_jpeg()
    pdf = render_photo_sheet(jpeg, "l", 4, DEFAULT_FONT)
    session = MarkerSearch(session_markers(None, photo_fragments(jpeg), None))
    assert {hit.kind for hit in session.search_bytes(pdf)} == {"photo"}
    assert {hit.kind for hit in MarkerSearch(daily_markers()).search_bytes(pdf)} == {"jpeg"}
    assert b"ASCII85Decode" not in pdf


CANARY = "c4n4ry-of-this-session-0123456789"


def test_a_receipt_is_visible_to_the_session_scan_only_through_its_canary() -> None:
    """R12: the receipt's text is compressed in a subset font, so the application ID is not
    in its bytes; the session's canary in the PDF keywords is what lets the wipe's scan see a
    receipt left in the spool. Without a canary the same scan finds nothing."""
    markers = session_markers(APPLICATION_ID, [], CANARY)
    with_canary = render_receipt(sample_receipt(canary=CANARY), DEFAULT_FONT)
    assert {hit.kind for hit in MarkerSearch(markers).search_bytes(with_canary)} == {"canary"}
    without = render_receipt(sample_receipt(), DEFAULT_FONT)
    assert MarkerSearch(markers).search_bytes(without) == []
    sheet = render_photo_sheet(sample_jpeg(), "l", 4, DEFAULT_FONT, canary=CANARY)
    assert "canary" in {hit.kind for hit in MarkerSearch(markers).search_bytes(sheet)}


def test_render_needs_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering happens in memory: nothing appears in the working or temp directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    render_receipt(sample_receipt(), DEFAULT_FONT)
    render_photo_sheet(sample_jpeg(), "l", 4, DEFAULT_FONT)
    assert list(tmp_path.iterdir()) == []
