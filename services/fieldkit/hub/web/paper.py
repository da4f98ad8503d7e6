"""The contract's forms 様式1-4 as A4 PDFs laid out like the specification's (R27).

Each form is a letter: the form's number, the date, the addressee (the prefecture's
governor), the contractor's address, name and representative, the spaced title, one
sentence, 記, and the numbered items. 様式2's 日程表 comes from the visits planned on the hub;
様式4's 業務内容 from what the kits recorded (``counts.completion_figures``), with the
completion tables attached (別紙). The font is the embedded IPAexGothic (``exports.pdf_font``).
Nothing here reads the database or Flask: callers pass plain values, so a test can render
a form from a literal.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, PageBreak, Paragraph, Spacer, Table, TableStyle

from fieldkit.hub.web.counts import CompletionFigures, ReportTable
from fieldkit.hub.web.exports import a4_document, escape, pdf_font, table_flowables

FORMS = {
    "form1": ("様式1", "業務着手届"),
    "form2": ("様式2", "業務日程表"),
    "form3": ("様式3", "業務実施代理人届"),
    "form4": ("様式4", "業務完了報告書"),
}
REIWA_START = dt.date(2019, 5, 1)
WEEKDAYS = "月火水木金土日"
VISIT_KIND_JA = {"application-support": "出張申請サポート", "card-issuance-support": "交付支援"}


@dataclass(frozen=True)
class Contract:
    """The contract's details as the forms print them (dates ISO, amount in yen)."""

    work_name: str
    client: str
    signed_on: str
    started_on: str
    period_start: str
    period_end: str
    completed_on: str
    amount_yen: int
    contractor_address: str
    contractor_name: str
    representative: str
    agent_name: str
    agent_title: str
    work_summary: str


@dataclass(frozen=True)
class PlannedVisit:
    """One visit on 様式2's schedule (no applicant data: a place, a day, a kind)."""

    date: str
    facility: str
    municipality: str
    kind: str
    start_time: str
    end_time: str


def wareki(iso: str) -> str:
    """An ISO date as the forms write it: 令和8年8月3日 (令和元年 for 2019)."""
    if not iso:
        return "令和　年　月　日"
    day = dt.date.fromisoformat(iso)
    if day < REIWA_START:
        raise ValueError("dates before 令和 (2019-05-01) are not used on these forms")
    year = day.year - 2018
    return f"令和{'元' if year == 1 else year}年{day.month}月{day.day}日"


def yen(amount: int) -> str:
    return f"金 {amount:,} 円"


def period(contract: Contract) -> str:
    return f"{wareki(contract.period_start)}から{wareki(contract.period_end)}まで"


class _Styles:
    def __init__(self, font: str) -> None:
        self.body = ParagraphStyle("body", fontName=font, fontSize=10.5, leading=17)
        self.right = ParagraphStyle("right", parent=self.body, alignment=TA_RIGHT)
        self.center = ParagraphStyle("center", parent=self.body, alignment=TA_CENTER)
        self.title = ParagraphStyle(
            "title", fontName=font, fontSize=16, leading=24, alignment=TA_CENTER
        )
        self.small = ParagraphStyle("small", fontName=font, fontSize=9, leading=13)
        # The contractor's block sits in the right half, as on the specification's forms.
        self.sender = ParagraphStyle("sender", parent=self.body, leftIndent=95 * mm)


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _letter(
    number: str,
    title: str,
    sentence: str,
    contract: Contract,
    issued_on: str,
    styles: _Styles,
) -> list[Flowable]:
    """The head every form shares, down to 記."""
    return [
        _p(f"（{number}）", styles.body),
        _p(wareki(issued_on), styles.right),
        Spacer(1, 6 * mm),
        _p(f"{contract.client}　様", styles.body),
        Spacer(1, 6 * mm),
        _p("（受託者）", styles.sender),
        _p(f"住所　{contract.contractor_address}", styles.sender),
        _p(f"商号又は名称　{contract.contractor_name}", styles.sender),
        _p(f"代表者氏名　{contract.representative}", styles.sender),
        Spacer(1, 10 * mm),
        # Spaced like the specification's 「業 務 着 手 届」.
        _p(" ".join(title), styles.title),
        Spacer(1, 8 * mm),
        _p(sentence, styles.body),
        Spacer(1, 6 * mm),
        _p("記", styles.center),
        Spacer(1, 6 * mm),
    ]


def _items(rows: Sequence[tuple[str, str | Flowable]], styles: _Styles) -> Table:
    data = [
        [_p(label, styles.body), value if isinstance(value, Flowable) else _p(value, styles.body)]
        for label, value in rows
    ]
    table = Table(data, colWidths=[45 * mm, 135 * mm])
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
            ]
        )
    )
    return table


def _build(title: str, story: list[Flowable]) -> bytes:
    out = io.BytesIO()
    a4_document(out, title).build(story)
    return out.getvalue()


def form1(contract: Contract, issued_on: str, font_path: Path) -> bytes:
    """様式1 業務着手届: the work, the day it started, the period and the amount."""
    styles = _Styles(pdf_font(font_path))
    story = _letter(
        "様式1",
        "業務着手届",
        "下記のとおり業務に着手したので報告します。",
        contract,
        issued_on,
        styles,
    )
    story.append(
        _items(
            [
                ("1　業務名", contract.work_name),
                ("2　着手年月日", wareki(contract.started_on)),
                ("3　履行期間", period(contract)),
                ("4　契約金額", yen(contract.amount_yen)),
            ],
            styles,
        )
    )
    return _build("様式1 業務着手届", story)


def months_between(first: str, last: str) -> list[str]:
    """Every YYYY-MM from ``first``'s month to ``last``'s, in order."""
    year, month = int(first[:4]), int(first[5:7])
    end = (int(last[:4]), int(last[5:7]))
    months = []
    while (year, month) <= end:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def schedule_grid(contract: Contract, visits: Sequence[PlannedVisit]) -> list[list[str]]:
    """様式2's 日程表: a row per kind of work, a column per month of the period; each cell
    the days planned that month (``3日: 3, 5, 12``)."""
    months = months_between(contract.period_start, contract.period_end)
    header = ["項目", *(f"{int(m[5:7])}月" for m in months)]
    rows = [header]
    for kind, label in VISIT_KIND_JA.items():
        cells = []
        for month in months:
            days = sorted(
                {int(v.date[8:10]) for v in visits if v.kind == kind and v.date[:7] == month}
            )
            cells.append(f"{len(days)}日: " + ", ".join(map(str, days)) if days else "—")
        rows.append([label, *cells])
    return rows


def form2(
    contract: Contract, visits: Sequence[PlannedVisit], issued_on: str, font_path: Path
) -> bytes:
    """様式2 業務日程表: the period, the month-by-month schedule, then every planned visit."""
    styles = _Styles(pdf_font(font_path))
    story = _letter(
        "様式2",
        "業務日程表",
        "下記のとおり業務日程表を提出します。",
        contract,
        issued_on,
        styles,
    )
    story.append(
        _items([("1　業務名", contract.work_name), ("2　履行期間", period(contract))], styles)
    )
    story += [Spacer(1, 5 * mm), _p("3　日程表", styles.body), Spacer(1, 2 * mm)]
    grid = schedule_grid(contract, visits)
    months = len(grid[0]) - 1
    first = 32 * mm
    month_width = (180 * mm - first) / max(months, 1)
    table = Table(
        [[_p(c, styles.small) for c in row] for row in grid],
        colWidths=[first, *([month_width] * months)],
        repeatRows=1,
    )
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
            ]
        )
    )
    story.append(table)
    detail = ReportTable(
        "日程明細（訪問予定）",
        ["日付", "曜日", "実施場所", "市区町村", "種別", "時間"],
        [
            [
                wareki(v.date),
                WEEKDAYS[dt.date.fromisoformat(v.date).weekday()],
                v.facility,
                v.municipality,
                VISIT_KIND_JA.get(v.kind, v.kind),
                f"{v.start_time}〜{v.end_time}",
            ]
            for v in sorted(visits, key=lambda v: (v.date, v.start_time, v.facility))
        ],
        note=f"訪問 {len(visits)} 件（ハブに登録された予定）",
    )
    story += [Spacer(1, 6 * mm), *table_flowables([detail], styles.body.fontName)]
    return _build("様式2 業務日程表", story)


def form3(contract: Contract, issued_on: str, font_path: Path) -> bytes:
    """様式3 業務実施代理人届: the responsible agent, who is the contractor's employee."""
    styles = _Styles(pdf_font(font_path))
    story = _letter(
        "様式3",
        "業務実施代理人届",
        "下記のとおり業務実施代理人を定めたので報告します。\n"
        "なお、当該代理人は当社の社員であることを誓約します。",
        contract,
        issued_on,
        styles,
    )
    agent = f"{contract.agent_title}　{contract.agent_name}".strip("　")
    story.append(
        _items(
            [
                ("1　業務名", contract.work_name),
                ("2　履行期間", period(contract)),
                ("3　業務実施代理人", agent),
            ],
            styles,
        )
    )
    return _build("様式3 業務実施代理人届", story)


def results_text(figures: CompletionFigures) -> str:
    """様式4's 業務内容 results, in the prefecture's words."""
    days = figures.support_days
    span = f"（{wareki(days[0])}〜{wareki(days[-1])}）" if days else ""
    return "\n".join(
        [
            f"出張申請サポート実施日数　{len(days)}日{span}（目標 {figures.target_days}日）",
            f"申請サポート件数　{figures.sessions:,}件"
            f"（申請 {figures.outcomes['applied']:,}件、回付 {figures.outcomes['forwarded']:,}件、"
            f"同意なし {figures.outcomes.get('declined', 0):,}件、"
            f"中断 {figures.outcomes['abandoned']:,}件）",
            f"交付支援実施日数　{len(figures.issuance_days)}日",
            f"マイナンバーカード交付枚数　{figures.cards_issued:,}枚",
            f"広告費の上限（交付枚数×2,000円）　{figures.advertising_cap_yen:,}円",
        ]
    )


def form4(
    contract: Contract,
    figures: CompletionFigures,
    attachments: Sequence[ReportTable],
    issued_on: str,
    font_path: Path,
) -> bytes:
    """様式4 業務完了報告書: the contract's items, the results, and the tables attached."""
    styles = _Styles(pdf_font(font_path))
    story = _letter(
        "様式4",
        "業務完了報告書",
        "下記のとおり業務を完了したので、その実績について報告します。",
        contract,
        issued_on,
        styles,
    )
    summary = contract.work_summary.strip()
    content = (summary + "\n\n" if summary else "") + results_text(figures)
    attached = "実績を確認できる書類、成果品\n" + "\n".join(
        f"別紙{n}　{t.title.split(' ')[0]}" for n, t in enumerate(attachments, 1)
    )
    story.append(
        _items(
            [
                ("1　業務名", contract.work_name),
                ("2　履行期間", period(contract)),
                ("3　完了年月日", wareki(contract.completed_on)),
                ("4　契約金額", yen(contract.amount_yen)),
                ("5　業務内容", content),
                ("6　添付書類", attached),
            ],
            styles,
        )
    )
    if attachments:
        story.append(PageBreak())
    for n, table in enumerate(attachments, 1):
        story += [_p(f"別紙{n}", styles.body), *table_flowables([table], styles.body.fontName)]
    return _build("様式4 業務完了報告書", story)
