"""The application receipt (申請情報の控え): two labelled copies in one PDF, in memory. R5"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from fieldkit.capture.appid import grouped
from fieldkit.printing.fonts import japanese_font
from fieldkit.printing.messages import PrintReceipt, reception_grouped

JST = ZoneInfo("Asia/Tokyo")


@dataclass(frozen=True)
class ReceiptCopy:
    label_ja: str
    label_en: str
    note_ja: str
    note_en: str


# Two copies (R5): the applicant keeps one; the other is handed to staff at the end of the day.
COPIES = (
    ReceiptCopy(
        "本人控え",
        "Applicant's copy",
        "この控えは、カードを受け取るまで大切に保管してください。",
        "Keep this copy until you receive your card.",
    ),
    ReceiptCopy(
        "職員控え",
        "Staff copy",
        "この控えは、本日の業務終了時に担当職員へ提出します。",
        "This copy is handed to the staff in charge at the end of the day.",
    ),
)

MODE_WORDS = {
    "support": ("申請サポート方式（交付時来庁方式）", "Support mode (identity checked at pick-up)"),
    "municipal": (
        "出張申請受付方式（申請時来庁方式）",
        "Municipal reception (identity checked today)",
    ),
}

# What happens next, per mode (R7); {municipality} is the receiving municipality's name.
NEXT_STEPS = {
    "support": (
        "申請書は{municipality}に届きます。カードができあがると、{municipality}から交付通知書"
        "（はがき）が届きます。はがきと本人確認書類を持って、{municipality}の窓口でカードを"
        "受け取ってください。",
        "Your application goes to {municipality}. When the card is ready, {municipality} sends"
        " you a notice by post. Bring the notice and your ID to its office to receive the card.",
    ),
    "municipal": (
        "申請書は{municipality}に届きます。本人確認は本日済みました。カードができあがると、"
        "本人限定受取郵便でご自宅に届きます。",
        "Your application goes to {municipality}. Your identity was checked today. The card"
        " will be sent to your home by registered post that only you can receive.",
    ),
}
CONTACT = (
    "ご不明な点は、受付番号をお伝えのうえ、「お問い合わせ」の電話番号へお電話ください。",
    "If you have a question, call the contact number above and give your reception number.",
)


# Latin words stay whole; every Japanese character may end a line (no spaces to break at).
_TOKEN = re.compile(r"[\x21-\x7e]+\s*|\s+|.")


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Break ``text`` into lines no wider than ``width`` points."""
    lines: list[str] = []
    line = ""
    for token in _TOKEN.findall(text):
        if line and stringWidth((line + token).rstrip(), font, size) > width:
            lines.append(line.rstrip())
            line = token.lstrip()
        else:
            line += token
    if line.strip():
        lines.append(line.rstrip())
    return lines or [""]


def _yes_no(flag: bool) -> tuple[str, str]:
    return ("希望する", "Yes") if flag else ("希望しない", "No")


def receipt_rows(receipt: PrintReceipt) -> list[tuple[str, str, str]]:
    """(Japanese label, English label, value) for each line of the receipt."""
    when = receipt.applied_at
    if when.tzinfo is not None:
        when = when.astimezone(JST)
    mode_ja, mode_en = MODE_WORDS[receipt.mode]
    cert_ja, cert_en = _yes_no(receipt.electronic_certificate)
    braille_ja, braille_en = _yes_no(receipt.braille)
    # No session id: a 32-character token nobody can read out. The reception number is it.
    rows = [
        ("受付番号", "Reception number", reception_grouped(receipt.reception_number)),
        ("申請書ID", "Application ID", grouped(receipt.application_id)),
        ("申請日時", "Date and time", when.strftime("%Y年%m月%d日 %H:%M")),
        ("申請先", "Municipality", receipt.municipality),
        ("会場", "Site", receipt.site),
        ("申請方式", "Mode", f"{mode_ja}  {mode_en}"),
        ("電子証明書", "Electronic certificate", f"{cert_ja}  {cert_en}"),
        ("点字", "Braille", f"{braille_ja}  {braille_en}"),
        ("担当者ID", "Operator", receipt.operator_id),
    ]
    contact = contact_line(receipt)
    if contact:
        rows.append(("お問い合わせ", "Contact", contact))
    return rows


def contact_line(receipt: PrintReceipt) -> str:
    """The telephone and its hours, in both languages; empty when the kit has none."""
    if not receipt.contact_phone:
        return ""
    hours = "  ".join(h for h in (receipt.contact_hours_ja, receipt.contact_hours_en) if h)
    return f"{receipt.contact_phone}  {hours}".strip()


def render_receipt(receipt: PrintReceipt, font_path: Path, now: datetime | None = None) -> bytes:
    """Both copies as a two-page A4 PDF, built in memory (never written to disk)."""
    font = japanese_font(font_path)
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, invariant=True)
    # No title or author: PDF metadata must not carry anything about the applicant.
    canvas.setTitle("申請情報の控え")
    canvas.setCreator("fieldkit")
    canvas.setAuthor("")
    if receipt.canary:
        canvas.setKeywords(receipt.canary)
    rows = receipt_rows(receipt)
    for copy in COPIES:
        _draw_copy(canvas, font, copy, rows, receipt)
        canvas.showPage()
    canvas.save()
    return out.getvalue()


def _draw_copy(
    canvas: Canvas,
    font: str,
    copy: ReceiptCopy,
    rows: list[tuple[str, str, str]],
    receipt: PrintReceipt,
) -> None:
    width, height = A4
    left, right = 20 * mm, width - 20 * mm
    y = height - 25 * mm

    # The copy label is the first thing staff look for when sorting the day's receipts.
    canvas.setLineWidth(1.2)
    canvas.rect(right - 52 * mm, y - 6 * mm, 52 * mm, 16 * mm)
    canvas.setFont(font, 18)
    canvas.drawCentredString(right - 26 * mm, y + 1 * mm, copy.label_ja)
    canvas.setFont(font, 8)
    canvas.drawCentredString(right - 26 * mm, y - 4 * mm, copy.label_en)

    canvas.setFont(font, 20)
    canvas.drawString(left, y, "申請情報の控え")
    canvas.setFont(font, 10)
    canvas.drawString(
        left, y - 7 * mm, "マイナンバーカード交付申請  My Number Card application receipt"
    )
    y -= 22 * mm

    label_width = 45 * mm
    for label_ja, label_en, value in rows:
        canvas.setFont(font, 11)
        canvas.drawString(left, y, label_ja)
        canvas.setFont(font, 7)
        canvas.drawString(left, y - 4 * mm, label_en)
        canvas.setFont(font, 13)
        lines = wrap(value, font, 13, right - left - label_width)
        for i, line in enumerate(lines):
            canvas.drawString(left + label_width, y - i * 6 * mm, line)
        y -= max(12 * mm, (len(lines) * 6 + 6) * mm)
        canvas.setLineWidth(0.3)
        canvas.line(left, y + 5 * mm, right, y + 5 * mm)

    y -= 6 * mm
    canvas.setFont(font, 13)
    canvas.drawString(left, y, "これからの流れ  What happens next")
    y -= 8 * mm
    steps_ja, steps_en = (
        words.format(municipality=receipt.municipality) for words in NEXT_STEPS[receipt.mode]
    )
    y = _paragraph(canvas, font, 12, steps_ja, left, right, y)
    y = _paragraph(canvas, font, 9, steps_en, left, right, y - 2 * mm)
    if receipt.contact_phone:
        y = _paragraph(canvas, font, 12, CONTACT[0], left, right, y - 2 * mm)
        y = _paragraph(canvas, font, 9, CONTACT[1], left, right, y - 1 * mm)

    canvas.setFont(font, 11)
    y = _paragraph(canvas, font, 11, copy.note_ja, left, right, 30 * mm)
    _paragraph(canvas, font, 8, copy.note_en, left, right, y)


def _paragraph(
    canvas: Canvas, font: str, size: float, text: str, left: float, right: float, y: float
) -> float:
    canvas.setFont(font, size)
    for line in wrap(text, font, size, right - left):
        canvas.drawString(left, y, line)
        y -= size * 1.5
    return y
