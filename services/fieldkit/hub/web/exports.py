"""Report tables as files: CSV (UTF-8 with BOM, so Excel reads Japanese), XLSX and PDF.

The PDF embeds IPAexGothic (Debian fonts-ipaexfont-gothic) so Japanese text renders and can
be extracted everywhere; without that file it falls back to the built-in CID font
HeiseiKakuGo-W5 (not embedded: the reader must have a Japanese font).
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Sequence
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from fieldkit.hub.web.counts import ReportTable

BOM = "\ufeff"
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection: a site
# name like "=HYPERLINK(…)" typed on a tablet would run in the municipality's Excel).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_font_lock = threading.Lock()
_fonts: dict[Path, str] = {}


def inert(value: object) -> object:
    """A text cell that a spreadsheet would read as a formula, with a leading apostrophe (the
    OWASP rule for CSV); numbers and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(tables: Sequence[ReportTable]) -> bytes:
    """One CSV; several tables are separated by a blank line and a title row. Text that would
    be a formula is made inert (``inert``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for n, table in enumerate(tables):
        if len(tables) > 1:
            if n:
                writer.writerow([])
            writer.writerow([inert(table.title)])
        writer.writerow([inert(c) for c in table.columns])
        writer.writerows([inert(c) for c in row] for row in table.rows)
    return (BOM + out.getvalue()).encode("utf-8")


def _sheet_name(title: str, used: set[str]) -> str:
    # Excel: at most 31 characters, none of []:*?/\ , unique per workbook.
    base = "".join(c for c in title.split(" ")[0] if c not in "[]:*?/\\")[:28] or "sheet"
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}{n}"
    used.add(name)
    return name


def to_xlsx(tables: Sequence[ReportTable]) -> bytes:
    """One sheet per table: title, note, heading row in bold, then the rows. Every text cell
    is stored as text: openpyxl would store one starting with "=" as a formula."""
    book = Workbook()
    book.remove(book.worksheets[0])  # the default empty sheet; one sheet per table instead
    used: set[str] = set()
    for table in tables:
        sheet = book.create_sheet()
        sheet.title = _sheet_name(table.title, used)
        sheet.append([table.title])
        sheet.append([table.note])
        sheet.append(table.columns)
        for cell in sheet[3]:
            cell.font = Font(bold=True)
        for row in table.rows:
            sheet.append(row)
        for cells in sheet.iter_rows():
            for cell in cells:
                if isinstance(cell.value, str) and cell.data_type == "f":
                    cell.data_type = "s"
        for column, heading in zip("ABCDEFGHIJ", table.columns, strict=False):
            sheet.column_dimensions[column].width = max(12, len(heading) * 1.6)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def pdf_font(path: Path) -> str:
    """Register the Japanese font once per process; return its name."""
    with _font_lock:
        if path not in _fonts:
            if path.is_file():
                pdfmetrics.registerFont(TTFont("IPAexGothic", str(path)))
                _fonts[path] = "IPAexGothic"
            else:
                pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
                _fonts[path] = "HeiseiKakuGo-W5"
        return _fonts[path]


def to_pdf(tables: Sequence[ReportTable], title: str, font_path: Path) -> bytes:
    font = pdf_font(font_path)
    heading = ParagraphStyle("heading", fontName=font, fontSize=14, leading=20)
    small = ParagraphStyle("small", fontName=font, fontSize=8, leading=11)
    cell = ParagraphStyle("cell", fontName=font, fontSize=9, leading=12)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        title=title,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
    )
    story: list[object] = []
    for table in tables:
        story.append(Paragraph(_escape(table.title), heading))
        if table.note:
            story.append(Paragraph(_escape(table.note), small))
        story.append(Spacer(1, 3 * mm))
        data: list[list[Paragraph | str]] = [
            [Paragraph(_escape(str(c)), cell) for c in table.columns]
        ]
        data += [[Paragraph(_escape(str(v)), cell) for v in row] for row in table.rows]
        if not table.rows:
            data.append([Paragraph("データなし no data", cell)] + [""] * (len(table.columns) - 1))
        grid = Table(data, repeatRows=1)
        grid.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        story += [grid, Spacer(1, 8 * mm)]
    doc.build(story)  # type: ignore[arg-type]
    return out.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(fmt: str, tables: Sequence[ReportTable], title: str, font_path: Path) -> bytes:
    if fmt == "csv":
        return to_csv(tables)
    if fmt == "xlsx":
        return to_xlsx(tables)
    if fmt == "pdf":
        return to_pdf(tables, title, font_path)
    raise ValueError(f"unknown export format {fmt!r}: use csv, xlsx or pdf")
