"""The sanitization certificate as a PDF (消去証明書), Japanese first with English beside it.

The PDF is for people; the signed JSON is the evidence. The PDF prints the certificate id,
its signer and signature so a reader can match it to the JSON and verify that.
"""

from __future__ import annotations

from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from fieldkit.wipe.sanitize import Certificate

FONT = "HeiseiKakuGo-W5"


def certificate_rows(c: Certificate) -> list[tuple[str, str]]:
    v = c.verification
    return [
        ("証明書番号 / Certificate ID", c.certificate_id),
        ("端末 / Device", c.device),
        ("媒体の製造者 / Media make", c.media.make),
        ("型番 / Model", c.media.model),
        ("製造番号 / Serial number", c.media.serial),
        ("媒体の種類 / Media type", c.media.media_type),
        ("容量 / Size", f"{c.media.size_bytes:,} bytes"),
        ("対象 / Target", c.media.target),
        ("記録されていた情報 / Confidentiality", c.media.confidentiality),
        ("消去の区分 / Category (SP 800-88)", c.method.category),
        ("消去方法 / Technique", c.method.technique),
        *[(f"手順 {i + 1} / Step {i + 1}", step) for i, step in enumerate(c.method.steps)],
        ("使用ツール / Tool and version", f"{c.method.tool} ({c.method.tool_version})"),
        ("検証方法 / Verification method", v.method),
        (
            "検証の内容 / Verification",
            f"{v.subsections} subsections x {v.locations_per_subsection} + first/last: "
            f"{v.samples_read} samples of {v.sample_bytes} bytes, {v.samples_failed} failed; "
            f"keyslots left {v.keyslots_left}",
        ),
        ("消去実施者 / Sanitized by", _person(c.sanitized_by.name, c.sanitized_by.organization)),
        ("検証者 / Verified by", _person(c.verified_by.name, c.verified_by.organization)),
        ("日時 / Date", c.date),
        ("場所 / Location", c.location),
        ("消去後の扱い / Destination", c.post_sanitization_destination),
        ("結果 / Result", "合格 / PASS" if c.result == "pass" else "不合格 / FAIL"),
        ("署名鍵 / Signer (Ed25519)", c.signer),
        ("署名 / Signature", c.signature),
    ]


def _person(name: str, organization: str) -> str:
    return f"{name} ({organization})" if organization else name


def _wrap(text: str, width: float, size: float) -> list[str]:
    lines, line = [], ""
    for char in text:
        if pdfmetrics.stringWidth(line + char, FONT, size) > width:
            lines.append(line)
            line = ""
        line += char
    return [*lines, line]


def write_certificate_pdf(certificate: Certificate, path: Path) -> None:
    pdfmetrics.registerFont(UnicodeCIDFont(FONT))
    canvas = Canvas(str(path), pagesize=A4, invariant=True)
    canvas.setTitle("データ消去証明書 / Data sanitization certificate")
    width, height = A4
    y = height - 25 * mm
    canvas.setFont(FONT, 18)
    canvas.drawString(20 * mm, y, "データ消去証明書")
    canvas.setFont(FONT, 11)
    y -= 7 * mm
    canvas.drawString(20 * mm, y, "Data sanitization certificate (NIST SP 800-88 Rev. 1)")
    y -= 10 * mm
    size = 8.5
    for label, value in certificate_rows(certificate):
        lines = _wrap(value, width - 100 * mm, size)
        if y - 4.2 * mm * len(lines) < 20 * mm:
            canvas.showPage()
            y = height - 20 * mm
        canvas.setFont(FONT, size)
        canvas.drawString(20 * mm, y, label)
        for line in lines:
            canvas.drawString(80 * mm, y, line)
            y -= 4.2 * mm
        y -= 1.5 * mm
    canvas.setFont(FONT, 8)
    canvas.drawString(
        20 * mm, 12 * mm, "検証 / Verify: fieldkit wipe verify-certificate <certificate>.json"
    )
    canvas.save()


def write_report_pdf(title_ja: str, title_en: str, lines: list[str], path: Path) -> None:
    """A plain report (the compliance run): a title and one line per check."""
    pdfmetrics.registerFont(UnicodeCIDFont(FONT))
    canvas = Canvas(str(path), pagesize=A4, invariant=True)
    canvas.setTitle(f"{title_ja} / {title_en}")
    width, height = A4
    y = height - 25 * mm
    canvas.setFont(FONT, 16)
    canvas.drawString(20 * mm, y, title_ja)
    y -= 7 * mm
    canvas.setFont(FONT, 11)
    canvas.drawString(20 * mm, y, title_en)
    y -= 10 * mm
    size = 8
    for text in lines:
        for line in _wrap(text, width - 40 * mm, size):
            if y < 20 * mm:
                canvas.showPage()
                y = height - 20 * mm
            canvas.setFont(FONT, size)
            canvas.drawString(20 * mm, y, line)
            y -= 4 * mm
    canvas.save()
