"""Report tables computed from the statistics records (R21, R26, R27).

Every table is a ``ReportTable``: a title, column headings and rows, so one exporter writes
any of them as CSV, XLSX or PDF. Counts come from ``StatisticsRow`` only: no names, no ids.
A scope (municipality codes) limits every count to applicants resident there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from fieldkit.hub.db import ErasureRow, StatisticsRow
from fieldkit.hub.web.models import FacilityRow, PacketErasureRow, VisitRow

OUTCOMES = ("applied", "forwarded", "abandoned")
OUTCOME_HEADINGS = ["申請 applied", "転送 forwarded", "中断 abandoned", "合計 total"]
SEXES = ("female", "male", "other", "unknown")
SEX_HEADINGS = ["女性 female", "男性 male", "その他 other", "不明 unknown", "合計 total"]
JST = dt.timezone(dt.timedelta(hours=9))


@dataclass(frozen=True)
class Scope:
    """Which statistics a report may count: a date range and, for municipality users, codes."""

    date_from: str = ""
    date_to: str = ""
    municipalities: tuple[str, ...] | None = None

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.date_from:
            clauses.append(StatisticsRow.date >= self.date_from)
        if self.date_to:
            clauses.append(StatisticsRow.date <= self.date_to)
        if self.municipalities is not None:
            clauses.append(StatisticsRow.municipality.in_(self.municipalities))
        return clauses

    def describe(self) -> str:
        parts = [f"期間 {self.date_from or '…'} 〜 {self.date_to or '…'}"]
        if self.municipalities is not None:
            parts.append("市区町村 " + ", ".join(self.municipalities))
        return " / ".join(parts)


@dataclass
class ReportTable:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""


def _by_outcome(session: Session, key: Any, scope: Scope, heading: str, title: str) -> ReportTable:
    query: Select[Any] = (
        select(key, StatisticsRow.outcome, func.count())
        .where(and_(True, *scope.where()))
        .group_by(key, StatisticsRow.outcome)
    )
    grid: dict[str, dict[str, int]] = {}
    for row in session.execute(query):
        grid.setdefault(str(row[0]), {})[str(row[1])] = int(row[2])
    table = ReportTable(title, [heading, *OUTCOME_HEADINGS], note=scope.describe())
    for value in sorted(grid):
        counts = [grid[value].get(o, 0) for o in OUTCOMES]
        table.rows.append([value, *counts, sum(grid[value].values())])
    if table.rows:
        table.rows.append(
            ["合計 total", *(sum(r[i] for r in table.rows) for i in range(1, len(OUTCOMES) + 2))]
        )
    return table


def by_site(session: Session, scope: Scope) -> ReportTable:
    return _by_outcome(session, StatisticsRow.site, scope, "会場 site", "会場別件数 Counts by site")


def by_municipality(session: Session, scope: Scope) -> ReportTable:
    return _by_outcome(
        session,
        StatisticsRow.municipality,
        scope,
        "住所地 municipality",
        "住所地市区町村別件数 Counts by municipality of residence",
    )


def by_day(session: Session, scope: Scope) -> ReportTable:
    return _by_outcome(session, StatisticsRow.date, scope, "日付 date", "日別件数 Counts by day")


def by_month(session: Session, scope: Scope) -> ReportTable:
    month = func.substr(StatisticsRow.date, 1, 7)
    return _by_outcome(session, month, scope, "月 month", "月別件数 Counts by month")


def _age_key(band: str) -> tuple[int, str]:
    head = band.split("-")[0].rstrip("+")
    return (int(head), band) if head.isdigit() else (999, band)


def by_sex_age(session: Session, scope: Scope) -> ReportTable:
    """Applications (outcome ``applied``) by age band (rows) and sex (columns)."""
    query = (
        select(StatisticsRow.age_band, StatisticsRow.sex, func.count())
        .where(and_(StatisticsRow.outcome == "applied", *scope.where()))
        .group_by(StatisticsRow.age_band, StatisticsRow.sex)
    )
    grid: dict[str, dict[str, int]] = {}
    for row in session.execute(query):
        grid.setdefault(str(row[0]), {})[str(row[1])] = int(row[2])
    table = ReportTable(
        "性別・年代別申請件数 Applications by sex and age band",
        ["年代 age band", *SEX_HEADINGS],
        note=scope.describe(),
    )
    for band in sorted(grid, key=_age_key):
        counts = [grid[band].get(s, 0) for s in SEXES]
        table.rows.append([band, *counts, sum(counts)])
    if table.rows:
        table.rows.append(
            ["合計 total", *(sum(r[i] for r in table.rows) for i in range(1, len(SEXES) + 2))]
        )
    return table


REPORTS = {
    "site": by_site,
    "municipality": by_municipality,
    "sex-age": by_sex_age,
    "day": by_day,
    "month": by_month,
}


def _day_bounds(date: str) -> tuple[float, float]:
    start = dt.datetime.fromisoformat(date).replace(tzinfo=JST)
    return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def work_log(session: Session, visit: VisitRow, scope: Scope) -> list[ReportTable]:
    """業務日誌 for one visit: who, when, what kind, counts, incidents, erasure results (R21)."""
    facility = session.get(FacilityRow, visit.facility_id)
    head = ReportTable(
        f"業務日誌 Daily work log — {visit.date}",
        ["項目 item", "内容 value"],
        [
            ["会場 site", facility.name if facility else str(visit.facility_id)],
            ["種別 kind", visit.kind],
            ["端末 device", visit.device_id],
            ["責任者 lead", visit.lead],
            ["従事者 staff", ", ".join(visit.staff)],
            ["時間 times", f"{visit.start_time}-{visit.end_time}"],
            ["事故等 incidents", visit.incidents or "なし none"],
        ],
    )
    _, per_mode = _device_day_counts(session, visit.device_id, visit.date, scope)
    counts = ReportTable(
        "件数 Counts",
        ["方式 mode", *OUTCOME_HEADINGS],
        [[mode, *vals, sum(vals)] for mode, vals in sorted(per_mode.items())],
    )
    start, end = _day_bounds(visit.date)
    erasures = ReportTable(
        "消去記録 Erasure records",
        ["時刻 time", "レベル level", "検証 verified"],
        [
            [
                dt.datetime.fromtimestamp(row.at, JST).strftime("%H:%M:%S"),
                row.level,
                "済 yes" if row.verified else "未 NO",
            ]
            for row in session.scalars(
                select(ErasureRow)
                .where(
                    ErasureRow.device_id == visit.device_id,
                    ErasureRow.at >= start,
                    ErasureRow.at < end,
                )
                .order_by(ErasureRow.at)
            )
        ],
    )
    return [head, counts, erasures]


def _device_day_counts(
    session: Session, device: str, date: str, scope: Scope
) -> tuple[int, dict[str, list[int]]]:
    where = [StatisticsRow.device_id == device, StatisticsRow.date == date]
    if scope.municipalities is not None:
        where.append(StatisticsRow.municipality.in_(scope.municipalities))
    grid: dict[str, list[int]] = {}
    total = 0
    for mode, outcome, count in session.execute(
        select(StatisticsRow.mode, StatisticsRow.outcome, func.count())
        .where(*where)
        .group_by(StatisticsRow.mode, StatisticsRow.outcome)
    ):
        grid.setdefault(mode, [0, 0, 0])[OUTCOMES.index(outcome)] += int(count)
        total += int(count)
    return total, grid


def visit_days(session: Session, kind: str = "application-support") -> list[str]:
    return sorted(
        set(session.scalars(select(VisitRow.date).where(VisitRow.kind == kind).distinct()))
    )


def monthly(session: Session, month: str, scope: Scope) -> list[ReportTable]:
    """月次報告 (R26): the month's visits, counts and the hub's erasures of picked-up packets."""
    first = f"{month}-01"
    last = f"{month}-31"
    in_month = Scope(first, last, scope.municipalities)
    visits = session.scalars(
        select(VisitRow)
        .where(VisitRow.date >= first, VisitRow.date <= last)
        .order_by(VisitRow.date)
    ).all()
    facilities = {f.id: f.name for f in session.scalars(select(FacilityRow))}
    visit_table = ReportTable(
        f"月次報告 Monthly report {month} — 訪問 visits",
        ["日付 date", "会場 site", "種別 kind", "端末 device", "責任者 lead", "人数 staff"],
        [
            [v.date, facilities.get(v.facility_id, ""), v.kind, v.device_id, v.lead, len(v.staff)]
            for v in visits
        ],
    )
    start, end = _day_bounds(first)[0], _month_end(month)
    erase_where = [PacketErasureRow.erased_at >= start, PacketErasureRow.erased_at < end]
    if scope.municipalities is not None:
        erase_where.append(PacketErasureRow.municipality.in_(scope.municipalities))
    erased = session.scalar(select(func.count()).select_from(PacketErasureRow).where(*erase_where))
    device_erasures = session.scalar(
        select(func.count())
        .select_from(ErasureRow)
        .where(ErasureRow.at >= start, ErasureRow.at < end)
    )
    evidence = ReportTable(
        "消去 Erasure",
        ["項目 item", "件数 count"],
        [
            ["端末の消去記録 device erasure records", int(device_erasures or 0)],
            [
                "受領確認後に消去した封緘データ sealed packets erased after receipt",
                int(erased or 0),
            ],
        ],
    )
    return [visit_table, by_site(session, in_month), by_municipality(session, in_month), evidence]


def _month_end(month: str) -> float:
    year, mon = (int(p) for p in month.split("-"))
    nxt = dt.date(year + (mon == 12), mon % 12 + 1, 1)
    return dt.datetime.combine(nxt, dt.time(), JST).timestamp()


def completion(session: Session, scope: Scope, programme_days: int) -> list[ReportTable]:
    """様式4 draft (R27): days done against the programme's target, with the counts attached."""
    days = visit_days(session)
    issuance = visit_days(session, "card-issuance-support")
    summary = ReportTable(
        "完了報告書（様式4）案 Completion report draft",
        ["項目 item", "値 value"],
        [
            ["申請サポート実施日数 application-support days", len(days)],
            ["目標日数 target days", programme_days],
            ["達成 met", "はい yes" if len(days) >= programme_days else "いいえ no"],
            ["交付支援実施日数 card-issuance-support days", len(issuance)],
            ["初日 first day", days[0] if days else ""],
            ["最終日 last day", days[-1] if days else ""],
        ],
        note=scope.describe(),
    )
    return [
        summary,
        by_site(session, scope),
        by_municipality(session, scope),
        by_sex_age(session, scope),
        by_month(session, scope),
    ]


def daily_series(session: Session, scope: Scope, limit: int = 31) -> Sequence[tuple[str, int]]:
    """(date, applications) for the dashboard chart, the most recent ``limit`` days."""
    rows = session.execute(
        select(StatisticsRow.date, func.count())
        .where(and_(StatisticsRow.outcome == "applied", *scope.where()))
        .group_by(StatisticsRow.date)
        .order_by(StatisticsRow.date.desc())
        .limit(limit)
    ).all()
    return [(str(d), int(c)) for d, c in reversed(rows)]


def municipality_series(session: Session, scope: Scope, limit: int = 10) -> list[tuple[str, int]]:
    """(municipality of residence, applications) for the dashboard, the ``limit`` largest."""
    count = func.count()
    rows = session.execute(
        select(StatisticsRow.municipality, count)
        .where(and_(StatisticsRow.outcome == "applied", *scope.where()))
        .group_by(StatisticsRow.municipality)
        .order_by(count.desc(), StatisticsRow.municipality)
        .limit(limit)
    ).all()
    return [(str(m), int(c)) for m, c in rows]
