"""Report tables computed from the statistics records (R21, R26, R27).

Every table is a ``ReportTable``: a title, column headings and rows, so one exporter writes
any of them as CSV, XLSX or PDF. Counts come from ``StatisticsRow`` only: no names, no ids.
A scope (municipality codes) limits every count to applicants resident there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from fieldkit.hub.db import ErasureRow, StatisticsRow
from fieldkit.hub.web.models import (
    FacilityRow,
    IncidentRow,
    OperatorRow,
    PacketErasureRow,
    VisitRow,
)
from fieldkit.hub.web.places import municipality_name
from fieldkit.hub.web.text import reasons_words, t
from fieldkit.wipe.record import ChainSummary

# declined (no agreement to the terms, R2) and abandoned (stopped) are counted apart (issue 21).
OUTCOMES = ("applied", "forwarded", "declined", "abandoned")
SEXES = ("female", "male", "other", "unknown")
JST = dt.timezone(dt.timedelta(hours=9))


def outcome_headings() -> list[str]:
    return [*(t(f"col.{o}") for o in OUTCOMES), t("col.total")]


def sex_headings() -> list[str]:
    return [*(t(f"sex.{s}") for s in SEXES), t("col.total")]


def age_label(band: str) -> str:
    """An age band as people read it: 65〜74歳, 75歳以上, 不明."""
    if band == "unknown":
        return t("age.unknown")
    if band.endswith("+"):
        return t("age.over", low=band[:-1])
    low, _, high = band.partition("-")
    return t("age.band", low=low, high=high) if high else band


@dataclass(frozen=True)
class Scope:
    """Which statistics a report may count: a date range and, for municipality users, codes."""

    date_from: str = ""
    date_to: str = ""
    municipalities: tuple[str, ...] | None = None
    # False when every record falls within the dates anyway (``covering``): the same counts,
    # without the date conditions that make SQLite walk the date index row by row.
    filter_dates: bool = True
    # False when the dates hold most records (``covering``): the conditions are then written
    # on ``date || ''``, which no index serves, so SQLite scans the table as PostgreSQL does.
    index_dates: bool = True

    def where(
        self, date: Any = StatisticsRow.date, municipality: Any = StatisticsRow.municipality
    ) -> list[ColumnElement[bool]]:
        """The scope as SQL conditions on the statistics (or on other date and municipality
        columns: a visit's date and its facility's municipality)."""
        clauses: list[ColumnElement[bool]] = []
        if not self.index_dates:
            date = date.concat("")
        if self.date_from and self.filter_dates:
            clauses.append(date >= self.date_from)
        if self.date_to and self.filter_dates:
            clauses.append(date <= self.date_to)
        if self.municipalities is not None:
            clauses.append(municipality.in_(self.municipalities))
        return clauses

    def describe(self) -> str:
        parts = [t("scope.period", start=self.date_from or "…", end=self.date_to or "…")]
        if self.municipalities is not None:
            names = "、".join(municipality_name(c) for c in self.municipalities)
            parts.append(t("scope.municipalities", names=names))
        return " / ".join(parts)


# Above this share of the statistics in its dates, a range is read by scanning the table:
# SQLite otherwise walks the date index and fetches each row, about 4x slower for a range
# that holds most rows (docs/hub-web.md).
WIDE_RANGE = 0.3


def covering(session: Session, scope: Scope) -> Scope:
    """The scope, planned for the dates it asks: without date conditions when no statistics
    record and no visit lies outside them (two index lookups each); with conditions no index
    serves when they hold most of the statistics (two index-only counts). The same counts and
    the same heading either way."""
    if not (scope.date_from or scope.date_to):
        return scope
    outside = False
    for column in (StatisticsRow.date, VisitRow.date):
        first, last = session.execute(select(func.min(column), func.max(column))).one()
        if first is not None and (
            (scope.date_from and first < scope.date_from)
            or (scope.date_to and last > scope.date_to)
        ):
            outside = True
    if not outside:
        return replace(scope, filter_dates=False)
    total = session.scalar(select(func.count()).select_from(StatisticsRow)) or 0
    dates_only = Scope(scope.date_from, scope.date_to)
    inside = session.scalar(select(func.count()).where(*dates_only.where())) or 0
    if total and inside / total > WIDE_RANGE:
        return replace(scope, index_dates=False)
    return scope


@dataclass
class ReportTable:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""
    # Rows to flag (a red row on the page, marked in the exports): one flag per row, or none.
    alarms: list[bool] = field(default_factory=list)


def _by_outcome(
    session: Session,
    key: Any,
    scope: Scope,
    heading: str,
    title: str,
    label: Callable[[str], str] = str,
) -> ReportTable:
    query: Select[Any] = (
        select(key, StatisticsRow.outcome, func.count())
        .where(and_(True, *scope.where()))
        .group_by(key, StatisticsRow.outcome)
    )
    grid: dict[str, dict[str, int]] = {}
    for row in session.execute(query):
        grid.setdefault(str(row[0]), {})[str(row[1])] = int(row[2])
    table = ReportTable(title, [heading, *outcome_headings()], note=scope.describe())
    for value in sorted(grid):
        counts = [grid[value].get(o, 0) for o in OUTCOMES]
        table.rows.append([label(value), *counts, sum(grid[value].values())])
    if table.rows:
        table.rows.append(
            [t("total"), *(sum(r[i] for r in table.rows) for i in range(1, len(OUTCOMES) + 2))]
        )
    return table


def by_site(session: Session, scope: Scope) -> ReportTable:
    return _by_outcome(session, StatisticsRow.site, scope, t("col.site"), t("report.site"))


def by_place_visited(session: Session, scope: Scope) -> ReportTable:
    """Sessions by the place visited (実施個所別, R21): a session belongs to the visit staff
    chose on the tablet for the day (``statistics.visit_id``). A record without one (from a
    tablet that had no visit to choose, or from before it could) belongs to the visit planned
    on the hub for that tablet and day; with none planned it counts under 予定外 with the
    tablet's site label, and with two planned under both places' names together."""
    by_id: dict[int, tuple[str, str]] = {}
    places: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for planned, device, date, kind, name, code in session.execute(
        select(
            VisitRow.id,
            VisitRow.device_id,
            VisitRow.date,
            VisitRow.kind,
            FacilityRow.name,
            FacilityRow.municipality,
        ).join(FacilityRow, FacilityRow.id == VisitRow.facility_id)
    ):
        by_id[planned] = (name, code)
        if kind == "application-support":
            places.setdefault((device, date), []).append((name, code))
    grid: dict[tuple[str, str], dict[str, int]] = {}
    for chosen, device, date, site, outcome, count in session.execute(
        select(
            StatisticsRow.visit_id,
            StatisticsRow.device_id,
            StatisticsRow.date,
            StatisticsRow.site,
            StatisticsRow.outcome,
            func.count(),
        )
        .where(and_(True, *scope.where()))
        .group_by(
            StatisticsRow.visit_id,
            StatisticsRow.device_id,
            StatisticsRow.date,
            StatisticsRow.site,
            StatisticsRow.outcome,
        )
    ):
        visited = (
            [by_id[chosen]] if chosen in by_id else sorted(set(places.get((device, date), [])))
        )
        if not visited:
            place = (f"{t('unscheduled')}（{site}）", "")
        else:
            place = (
                " / ".join(n for n, _ in visited),
                " / ".join(municipality_name(c) for c in sorted({c for _, c in visited})),
            )
        cell = grid.setdefault(place, {})
        cell[outcome] = cell.get(outcome, 0) + int(count)
    table = ReportTable(
        t("report.place"),
        [t("col.place"), t("col.municipality"), *outcome_headings()],
        note=scope.describe() + " / " + t("note.by_place"),
    )
    for (name, code), cell in sorted(grid.items()):
        counts = [cell.get(o, 0) for o in OUTCOMES]
        table.rows.append([name, code, *counts, sum(counts)])
    if table.rows:
        table.rows.append(
            [
                t("total"),
                "",
                *(sum(r[i] for r in table.rows) for i in range(2, len(OUTCOMES) + 3)),
            ]
        )
    return table


def by_municipality(session: Session, scope: Scope) -> ReportTable:
    return _by_outcome(
        session,
        StatisticsRow.municipality,
        scope,
        t("col.residence"),
        t("report.municipality"),
        municipality_name,
    )


def by_day(session: Session, scope: Scope) -> ReportTable:
    return _by_outcome(session, StatisticsRow.date, scope, t("col.date"), t("report.day"))


def by_month(session: Session, scope: Scope) -> ReportTable:
    month = func.substr(StatisticsRow.date, 1, 7)
    return _by_outcome(session, month, scope, t("col.month"), t("report.month"))


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
        t("report.sex-age"), [t("col.age_band"), *sex_headings()], note=scope.describe()
    )
    for band in sorted(grid, key=_age_key):
        counts = [grid[band].get(s, 0) for s in SEXES]
        table.rows.append([age_label(band), *counts, sum(counts)])
    if table.rows:
        table.rows.append(
            [t("total"), *(sum(r[i] for r in table.rows) for i in range(1, len(SEXES) + 2))]
        )
    return table


def _day_bounds(date: str) -> tuple[float, float]:
    start = dt.datetime.fromisoformat(date).replace(tzinfo=JST)
    return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def _staff(session: Session, ids: Sequence[str]) -> str:
    """Operator ids with their registered names: who was present."""
    query = select(OperatorRow.operator_id, OperatorRow.name).where(
        OperatorRow.operator_id.in_(ids)
    )
    names = {operator: name for operator, name in session.execute(query)}
    return ", ".join(f"{i} {names[i]}" if i in names else i for i in ids)


def work_log(
    session: Session, visit: VisitRow, scope: Scope, chain: ChainSummary | None = None
) -> list[ReportTable]:
    """業務日誌 for one visit day (R21): who was present and when, the sessions by outcome,
    incidents, the device and its erasure status (this day's records, and its whole
    erasure-record chain as the hub holds it, when ``chain`` is given), the lead's remarks."""
    facility = session.get(FacilityRow, visit.facility_id)
    reports = session.scalars(
        select(IncidentRow.id).where(IncidentRow.occurred_on == visit.date).order_by(IncidentRow.id)
    ).all()
    head = ReportTable(
        t("report.worklog", date=visit.date),
        [t("col.item"), t("col.value")],
        [
            [t("worklog.site"), facility.name if facility else str(visit.facility_id)],
            [t("col.municipality"), municipality_name(facility.municipality) if facility else ""],
            [t("worklog.kind"), t(f"kind.{visit.kind}")],
            [t("device"), visit.device_id],
            [t("worklog.lead"), _staff(session, [visit.lead])],
            [t("worklog.staff"), _staff(session, visit.staff)],
            [t("worklog.times"), f"{visit.start_time}-{visit.end_time}"],
            [t("worklog.incidents"), visit.incidents or t("none")],
            [
                t("worklog.incident_reports"),
                "、".join(t("incidents.number", number=n) for n in reports) or t("none"),
            ],
            [t("worklog.cards"), visit.cards_issued],
            [t("worklog.remarks"), visit.remarks or "—"],
        ],
    )
    sessions, per_mode = _visit_counts(session, visit, scope)
    counts = ReportTable(
        t("worklog.sessions_by_outcome"),
        [t("col.mode"), *outcome_headings()],
        [[t(f"mode.{mode}"), *vals, sum(vals)] for mode, vals in sorted(per_mode.items())],
    )
    if counts.rows:
        counts.rows.append(
            [t("total"), *(sum(r[i] for r in counts.rows) for i in range(1, len(OUTCOMES) + 2))]
        )
    start, end = _day_bounds(visit.date)
    records = session.scalars(
        select(ErasureRow)
        .where(
            ErasureRow.device_id == visit.device_id,
            ErasureRow.at >= start,
            ErasureRow.at < end,
        )
        .order_by(ErasureRow.at)
    ).all()
    if chain is None:
        chain_state = "—"
    elif chain.intact:
        chain_state = t("chain.intact", records=chain.records, head=chain.head[:12])
    else:
        chain_state = t("chain.broken", problems=reasons_words(chain.problems))
    devices = ReportTable(
        t("worklog.device_status"),
        [
            t("device"),
            t("worklog.sessions"),
            t("worklog.erasure_records"),
            t("col.verified"),
            t("worklog.signature_checked"),
            t("worklog.chain"),
        ],
        [
            [
                visit.device_id,
                sessions,
                len(records),
                f"{sum(r.verified for r in records)}/{len(records)}",
                f"{sum(r.signed for r in records)}/{len(records)}",
                chain_state,
            ]
        ],
    )
    erasures = ReportTable(
        t("evidence.records_title"),
        [t("col.time"), t("col.level"), t("col.verified"), t("col.signed")],
        [
            [
                dt.datetime.fromtimestamp(row.at, JST).strftime("%H:%M:%S"),
                t(f"level.{row.level}"),
                t("checked_yes") if row.verified else t("checked_no"),
                t("checked_yes") if row.signed else t("checked_no"),
            ]
            for row in records
        ],
        alarms=[not (row.verified and row.signed) for row in records],
    )
    return [head, counts, devices, erasures]


def _visit_counts(
    session: Session, visit: VisitRow, scope: Scope
) -> tuple[int, dict[str, list[int]]]:
    """A visit's sessions: those its tablet's staff chose it for, and those of its tablet and
    day that name no visit (from before tablets chose, or with none planned then)."""
    where = [
        or_(
            StatisticsRow.visit_id == visit.id,
            and_(
                StatisticsRow.visit_id.is_(None),
                StatisticsRow.device_id == visit.device_id,
                StatisticsRow.date == visit.date,
            ),
        )
    ]
    if scope.municipalities is not None:
        where.append(StatisticsRow.municipality.in_(scope.municipalities))
    grid: dict[str, list[int]] = {}
    total = 0
    for mode, outcome, count in session.execute(
        select(StatisticsRow.mode, StatisticsRow.outcome, func.count())
        .where(*where)
        .group_by(StatisticsRow.mode, StatisticsRow.outcome)
    ):
        grid.setdefault(mode, [0] * len(OUTCOMES))[OUTCOMES.index(outcome)] += int(count)
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
        t("report.monthly", month=month),
        [
            t("col.date"),
            t("col.site"),
            t("col.kind"),
            t("device"),
            t("col.lead"),
            t("col.staff_count"),
        ],
        [
            [
                v.date,
                facilities.get(v.facility_id, ""),
                t(f"kind.{v.kind}"),
                v.device_id,
                v.lead,
                len(v.staff),
            ]
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
        t("monthly.erasure"),
        [t("col.item"), t("col.count")],
        [
            [t("monthly.device_records"), int(device_erasures or 0)],
            [t("monthly.packets_erased"), int(erased or 0)],
        ],
    )
    incidents = ReportTable(
        t("monthly.incidents"),
        [t("col.number"), t("col.occurred"), t("col.status"), t("col.what")],
        [
            [row.id, row.occurred_on, t(f"incident.{row.status}"), row.what]
            for row in session.scalars(
                select(IncidentRow)
                .where(IncidentRow.occurred_on >= first, IncidentRow.occurred_on <= last)
                .order_by(IncidentRow.occurred_on, IncidentRow.id)
            )
        ],
        note=t("monthly.incidents_note"),
    )
    if not incidents.rows:
        incidents.rows.append(["—", "", "", t("monthly.no_incidents")])
    return [
        visit_table,
        by_site(session, in_month),
        by_municipality(session, in_month),
        evidence,
        incidents,
    ]


def _month_end(month: str) -> float:
    year, mon = (int(p) for p in month.split("-"))
    nxt = dt.date(year + (mon == 12), mon % 12 + 1, 1)
    return dt.datetime.combine(nxt, dt.time(), JST).timestamp()


ADVERTISING_YEN_PER_CARD = 2000  # specification §7(1)④: advertising ≤ cards issued × ¥2,000


@dataclass(frozen=True)
class CompletionFigures:
    """The results 様式4 reports: days worked, sessions by outcome, cards handed over."""

    support_days: list[str]
    issuance_days: list[str]
    target_days: int
    outcomes: dict[str, int]
    cards_issued: int

    @property
    def sessions(self) -> int:
        return sum(self.outcomes.values())

    @property
    def advertising_cap_yen(self) -> int:
        return self.cards_issued * ADVERTISING_YEN_PER_CARD


def _visit_where(scope: Scope) -> list[ColumnElement[bool]]:
    return scope.where(VisitRow.date, FacilityRow.municipality)


def completion_figures(session: Session, scope: Scope, programme_days: int) -> CompletionFigures:
    outcomes = {o: 0 for o in OUTCOMES}
    for outcome, count in session.execute(
        select(StatisticsRow.outcome, func.count())
        .where(and_(True, *scope.where()))
        .group_by(StatisticsRow.outcome)
    ):
        outcomes[str(outcome)] = int(count)
    cards = session.scalar(
        select(func.coalesce(func.sum(VisitRow.cards_issued), 0))
        .join(FacilityRow, FacilityRow.id == VisitRow.facility_id)
        .where(VisitRow.kind == "card-issuance-support", *_visit_where(scope))
    )
    return CompletionFigures(
        support_days=visit_days(session),
        issuance_days=visit_days(session, "card-issuance-support"),
        target_days=programme_days,
        outcomes=outcomes,
        cards_issued=int(cards or 0),
    )


def _cards(session: Session, scope: Scope, by_place: bool) -> ReportTable:
    """Cards handed over at card-issuance-support visits (R20), by place or by the
    municipality the place is in."""
    keys: list[Any] = (
        [FacilityRow.name, FacilityRow.municipality] if by_place else [FacilityRow.municipality]
    )
    query = (
        select(*keys, func.count(), func.coalesce(func.sum(VisitRow.cards_issued), 0))
        .join(FacilityRow, FacilityRow.id == VisitRow.facility_id)
        .where(VisitRow.kind == "card-issuance-support", *_visit_where(scope))
        .group_by(*keys)
        .order_by(*keys)
    )
    head = [t("col.place"), t("col.municipality")] if by_place else [t("col.municipality")]
    table = ReportTable(
        t("report.cards-place") if by_place else t("report.cards-municipality"),
        [*head, t("col.visits"), t("col.cards")],
        note=scope.describe(),
    )
    for row in session.execute(query):
        names = [str(v) for v in row[: len(keys)]]
        names[-1] = municipality_name(names[-1])  # the last key is the municipality
        table.rows.append([*names, int(row[-2]), int(row[-1])])
    if table.rows:
        width = len(keys)
        table.rows.append(
            [
                t("total"),
                *[""] * (width - 1),
                *(sum(r[i] for r in table.rows) for i in (width, width + 1)),
            ]
        )
    return table


def cards_by_place(session: Session, scope: Scope) -> ReportTable:
    return _cards(session, scope, by_place=True)


def cards_by_municipality(session: Session, scope: Scope) -> ReportTable:
    return _cards(session, scope, by_place=False)


def completion_summary(figures: CompletionFigures, scope: Scope) -> ReportTable:
    days = figures.support_days
    return ReportTable(
        t("report.completion"),
        [t("col.item"), t("col.value")],
        [
            [t("completion.support_days"), len(days)],
            [t("completion.target_days"), figures.target_days],
            [t("completion.met"), t("yes") if len(days) >= figures.target_days else t("no")],
            [t("completion.first_day"), days[0] if days else ""],
            [t("completion.last_day"), days[-1] if days else ""],
            *([t(f"col.{o}"), figures.outcomes[o]] for o in OUTCOMES),
            [t("completion.sessions"), figures.sessions],
            [t("completion.issuance_days"), len(figures.issuance_days)],
            [t("worklog.cards"), figures.cards_issued],
            [t("completion.cap"), t("yen", amount=f"{figures.advertising_cap_yen:,}")],
        ],
        note=scope.describe(),
    )


def completion(session: Session, scope: Scope, programme_days: int) -> list[ReportTable]:
    """様式4's results (R20, R27): days done against the programme's target, sessions and
    cards handed over with the advertising cap they allow, and the counts attached."""
    figures = completion_figures(session, scope, programme_days)
    return [
        completion_summary(figures, scope),
        by_place_visited(session, scope),
        by_site(session, scope),
        by_municipality(session, scope),
        by_sex_age(session, scope),
        by_month(session, scope),
        cards_by_place(session, scope),
        cards_by_municipality(session, scope),
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


REPORTS = {
    "place": by_place_visited,
    "site": by_site,
    "municipality": by_municipality,
    "sex-age": by_sex_age,
    "day": by_day,
    "month": by_month,
    "cards-place": cards_by_place,
    "cards-municipality": cards_by_municipality,
}
