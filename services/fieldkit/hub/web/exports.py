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

from flask import Response
from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Flowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from fieldkit.hub.web.counts import ReportTable
from fieldkit.hub.web.text import t

BOM = "\ufeff"
FORMATS = {
    # The charset is said once: werkzeug adds it to a text/* mimetype (issue 21).
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection: a site
# name like "=HYPERLINK(…)" typed on a tablet would run in the municipality's Excel).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
ALARM_FILL = PatternFill("solid", fgColor="FFD9D9")
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
        for n, row in enumerate(table.rows):
            sheet.append(row)
            if n < len(table.alarms) and table.alarms[n]:
                for cell in sheet[sheet.max_row]:
                    cell.fill = ALARM_FILL
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


def table_flowables(tables: Sequence[ReportTable], font: str) -> list[Flowable]:
    """The tables as reportlab flowables (title, note, grid), for any A4 document."""
    heading = ParagraphStyle("heading", fontName=font, fontSize=14, leading=20)
    small = ParagraphStyle("small", fontName=font, fontSize=8, leading=11)
    cell = ParagraphStyle("cell", fontName=font, fontSize=9, leading=12)
    story: list[Flowable] = []
    for table in tables:
        story.append(Paragraph(escape(table.title), heading))
        if table.note:
            story.append(Paragraph(escape(table.note), small))
        story.append(Spacer(1, 3 * mm))
        data: list[list[Paragraph | str]] = [
            [Paragraph(escape(str(c)), cell) for c in table.columns]
        ]
        data += [[Paragraph(escape(str(v)), cell) for v in row] for row in table.rows]
        if not table.rows:
            data.append([Paragraph(t("no_data"), cell)] + [""] * (len(table.columns) - 1))
        grid = Table(data, repeatRows=1)
        # Flagged rows are red on paper too (their text says why, for a grey printer).
        flagged = [
            ("BACKGROUND", (0, n + 1), (-1, n + 1), colors.HexColor("#ffd9d9"))
            for n, alarm in enumerate(table.alarms)
            if alarm
        ]
        grid.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    *flagged,
                ]
            )
        )
        story += [grid, Spacer(1, 8 * mm)]
    return story


def a4_document(out: io.BytesIO, title: str) -> SimpleDocTemplate:
    """An A4 page template with 15 mm margins, as every hub PDF uses."""
    return SimpleDocTemplate(
        out,
        pagesize=A4,
        title=title,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
    )


def to_pdf(tables: Sequence[ReportTable], title: str, font_path: Path) -> bytes:
    out = io.BytesIO()
    a4_document(out, title).build(table_flowables(tables, pdf_font(font_path)))
    return out.getvalue()


def escape(text: str) -> str:
    """Text for a reportlab Paragraph (its markup is XML-like)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def attachment(body: bytes, mimetype: str, filename: str) -> Response:
    """A download: the bytes, their type, and the name the browser saves them under."""
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def render(fmt: str, tables: Sequence[ReportTable], title: str, font_path: Path) -> bytes:
    if fmt == "csv":
        return to_csv(tables)
    if fmt == "xlsx":
        return to_xlsx(tables)
    if fmt == "pdf":
        return to_pdf(tables, title, font_path)
    raise ValueError(f"unknown export format {fmt!r}: use csv, xlsx or pdf")
