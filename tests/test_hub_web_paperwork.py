"""The contract's paperwork (issue 23; R20, R21, R27): contract details entered once, the forms
様式1-4 generated as A4 Japanese PDFs with the font embedded, kept with their SHA-256 and
versioned, and read back against an independent tally of a generated month of sessions across
several visits and municipalities; cards handed over at issuance-support visits and the
advertising cap they allow."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from fieldkit.hub.db import ErasureRow, make_engine
from fieldkit.hub.db import upgrade as migrate
from fieldkit.hub.web import paper
from fieldkit.hub.web.counts import CompletionFigures, Scope, by_day, covering
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import ContractRow, VisitRow
from fieldkit.hub.web.text import CATALOGUE
from tests.hubweb import (
    COUNTED,
    OUTCOME_COLUMNS,
    ClientFactory,
    add_record,
    csrf_token,
    generated_month,
    generated_statistics,
    migrate_down,
    municipality_label,
    pdf_text,
    read_csv,
    register_operator,
    store_statistics,
)

CONTRACT = {
    "work_name": "令和8年度 マイナンバーカード普及促進事業",
    "client": "長野県知事 阿部 守一",
    "signed_on": "2026-07-17",
    "started_on": "2026-07-21",
    "period_start": "2026-07-17",
    "period_end": "2027-02-26",
    "completed_on": "2027-02-26",
    "amount_yen": "12345678",
    "contractor_address": "長野県長野市大字南長野字幅下692-2",
    "contractor_name": "株式会社フィールドキット",
    "representative": "代表取締役 山田 花子",
    "agent_name": "佐藤 一郎",
    "agent_title": "事業部 部長",
    "work_summary": "社会福祉施設等への出張申請サポート及び交付支援を実施した。",
}
A4 = (595.2756, 841.8898)

MODE_LABELS = {m: CATALOGUE.say(f"mode.{m}", "ja") for m in ("support", "reception")}


def save_contract(client: FlaskClient, **changes: str) -> Any:
    token = csrf_token(client, "/contract")
    return client.post("/contract", data={**CONTRACT, **changes, "csrf_token": token})


def generate(client: FlaskClient, kind: str, issued_on: str = "2026-07-21") -> Any:
    token = csrf_token(client, "/contract")
    return client.post(
        "/contract/documents", data={"kind": kind, "issued_on": issued_on, "csrf_token": token}
    )


def documents(client: FlaskClient) -> list[dict[str, str]]:
    """The page's list of kept documents: title, version, SHA-256 and download link."""
    page = client.get("/contract").get_data(as_text=True)
    found = re.findall(
        r"<tr><td>([^<]+)</td><td>(\d+)</td>.*?<code class=\"hash\">([0-9a-f]{64})</code></td>\s*"
        r"<td><a href=\"([^\"]+)\">",
        page,
        re.S,
    )
    return [{"title": t, "version": v, "sha256": h, "href": a} for t, v, h, a in found]


def cards_for(visits: list[dict[str, Any]]) -> dict[int, int]:
    """Cards handed over at each issuance-support visit: a fixed, varied pattern."""
    issuance = [v for v in visits if v["kind"] == "card-issuance-support"]
    return {v["id"]: 3 + 7 * n for n, v in enumerate(issuance)}


def record_cards(client: FlaskClient, visit_id: int, cards: int | str, remarks: str = "") -> Any:
    token = csrf_token(client, f"/sites/visits/{visit_id}")
    return client.post(
        f"/sites/visits/{visit_id}",
        data={"cards_issued": str(cards), "remarks": remarks, "csrf_token": token},
    )


@pytest.fixture
def month(web_app: Flask) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    return generated_month(web_app)


def embedded_fonts(reader: PdfReader) -> set[str]:
    """Base names of the fonts whose program is embedded in the PDF (FontFile2 for TrueType)."""
    names = set()
    for page in reader.pages:
        fonts = page["/Resources"].get_object().get("/Font", {})
        for ref in fonts.values():
            font = ref.get_object()
            for descendant in font.get("/DescendantFonts", [font]):
                descriptor = descendant.get_object().get("/FontDescriptor")
                if descriptor is not None and "/FontFile2" in descriptor.get_object():
                    names.add(str(font["/BaseFont"]))
    return names


def pdf_plain(body: bytes, tmp_path: Path) -> str:
    """The PDF's text in reading order (pdftotext without -layout): a table cell's wrapped
    lines stay together."""
    path = tmp_path / "plain.pdf"
    path.write_bytes(body)
    return subprocess.run(
        ["pdftotext", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def notice(page: str) -> list[str]:
    return re.findall(r'<p class="notice" role="status">(.*?)</p>', page, re.S)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_forms_1_to_4_read_back_against_a_tally_of_the_month(
    client_as: ClientFactory,
    month: tuple[list[dict[str, Any]], list[dict[str, str]]],
    tmp_path: Path,
) -> None:
    """R20, R21, R27: each form is an A4 PDF in Japanese with IPAexGothic embedded; 様式2's
    schedule is the visits on the hub, 様式4's results are the sessions the kits recorded and
    the cards handed over, each equal to a tally made here without SQL."""
    visits, rows = month
    admin = client_as("admin")
    assert save_contract(admin).status_code == 302
    cards = cards_for(visits)
    for visit_id, n in cards.items():
        assert record_cards(admin, visit_id, n).status_code == 302
    bodies = {}
    for kind in ("form1", "form2", "form3", "form4"):
        assert generate(admin, kind).status_code == 302, kind
    listed = documents(admin)
    assert [d["title"] for d in listed] == [
        "様式4 業務完了報告書",
        "様式3 業務実施代理人届",
        "様式2 業務日程表",
        "様式1 業務着手届",
    ]
    for entry in listed:
        response = admin.get(entry["href"])
        assert response.status_code == 200 and response.mimetype == "application/pdf"
        assert hashlib.sha256(response.data).hexdigest() == entry["sha256"]
        reader = PdfReader(io.BytesIO(response.data))
        for page in reader.pages:
            assert (
                round(float(page.mediabox.width), 2),
                round(float(page.mediabox.height), 2),
            ) == (
                round(A4[0], 2),
                round(A4[1], 2),
            )
        assert any("IPAexGothic" in name for name in embedded_fonts(reader))
        bodies[entry["title"].split()[0]] = response.data

    # 様式1: the start notice, laid out as the specification's.
    text = pdf_text(bodies["様式1"], tmp_path)
    flat = squash(text)
    for expected in (
        "（様式1）",
        "令和8年7月21日",
        "長野県知事阿部守一様",
        "（受託者）",
        "住所長野県長野市大字南長野字幅下692-2",
        "商号又は名称株式会社フィールドキット",
        "代表者氏名代表取締役山田花子",
        "業務着手届",
        "下記のとおり業務に着手したので報告します。",
        "記",
        "1業務名令和8年度マイナンバーカード普及促進事業",
        "2着手年月日令和8年7月21日",
        "3履行期間令和8年7月17日から令和9年2月26日まで",
        "4契約金額金12,345,678円",
    ):
        assert expected in flat, expected

    # 様式2: the schedule from the visits planned on the hub.
    flat2 = squash(pdf_plain(bodies["様式2"], tmp_path))
    assert "業務日程表" in flat2 and "3日程表" in flat2
    support_days = sorted(int(v["date"][8:]) for v in visits if v["kind"] == "application-support")
    issuance_days = sorted(
        int(v["date"][8:]) for v in visits if v["kind"] == "card-issuance-support"
    )
    assert f"{len(support_days)}日:" + ",".join(map(str, support_days)) in flat2
    assert f"{len(issuance_days)}日:" + ",".join(map(str, issuance_days)) in flat2
    for visit in visits:
        day = dt.date.fromisoformat(visit["date"])
        line = (
            f"令和8年{day.month}月{day.day}日{'月火水木金土日'[day.weekday()]}{visit['facility']}"
        )
        assert line + visit["municipality"] in flat2, line
    assert f"訪問{len(visits)}件" in flat2

    # 様式3: the responsible agent.
    flat3 = squash(pdf_text(bodies["様式3"], tmp_path))
    assert "業務実施代理人届" in flat3
    assert "なお、当該代理人は当社の社員であることを誓約します。" in flat3
    assert "3業務実施代理人事業部部長佐藤一郎" in flat3

    # 様式4: results against the tally.
    outcomes = Counter(r["outcome"] for r in rows)
    total_cards = sum(cards.values())
    flat4 = squash(pdf_text(bodies["様式4"], tmp_path))
    for expected in (
        "業務完了報告書",
        "3完了年月日令和9年2月26日",
        "4契約金額金12,345,678円",
        "社会福祉施設等への出張申請サポート及び交付支援を実施した。",
        f"出張申請サポート実施日数{len(support_days)}日",
        f"申請サポート件数{len(rows):,}件（申請{outcomes['applied']:,}件、"
        f"回付{outcomes['forwarded']:,}件、同意なし{outcomes['declined']:,}件、"
        f"中断{outcomes['abandoned']:,}件）",
        f"交付支援実施日数{len(issuance_days)}日",
        f"マイナンバーカード交付枚数{total_cards:,}枚",
        f"広告費の上限（交付枚数×2,000円）{total_cards * 2000:,}円",
        "6添付書類実績を確認できる書類、成果品",
        "別紙1実施場所別件数",
        "別紙2会場別件数",
    ):
        assert expected in flat4, expected
    # The attachments: counts by site and by municipality of residence, as tallied.
    layout = pdf_text(bodies["様式4"], tmp_path)
    town = {v["facility"]: municipality_label(v["municipality"]) for v in visits}
    for key in ("site", "municipality"):
        tally: dict[str, Counter[str]] = {}
        for row in rows:
            value = municipality_label(row[key]) if key == "municipality" else row[key]
            tally.setdefault(value, Counter())[row["outcome"]] += 1
        for value, c in tally.items():
            cells = [str(n) for n in (*(c[o] for o in COUNTED), sum(c.values()))]
            found = [ln.split()[1:] for ln in layout.splitlines() if ln.strip().startswith(value)]
            if key == "site":  # by the place visited (with its municipality), then by label
                # A long municipality name may wrap in its cell: its start is on this line.
                assert found[0][-len(cells) :] == cells and found[1] == cells, value
                assert town[value].startswith(found[0][0]), value
            else:
                assert found[0] == cells, value


def test_every_generation_is_a_new_version_and_the_old_one_is_kept(
    web_app: Flask, client_as: ClientFactory, tmp_path: Path
) -> None:
    """R27: regenerating after a change keeps the earlier version byte for byte; both are
    listed with their hash, and the audit chain names each (kind, version, hash)."""
    admin = client_as("admin")
    save_contract(admin)
    generate(admin, "form1")
    first = documents(admin)[0]
    first_body = admin.get(first["href"]).data
    assert save_contract(admin, amount_yen="13000000").status_code == 302
    generate(admin, "form1")
    listed = documents(admin)
    assert [(d["title"], d["version"]) for d in listed] == [
        ("様式1 業務着手届", "2"),
        ("様式1 業務着手届", "1"),
    ]
    assert listed[1]["sha256"] == first["sha256"] != listed[0]["sha256"]
    assert admin.get(listed[1]["href"]).data == first_body
    assert "金12,345,678円" in squash(pdf_text(first_body, tmp_path))
    assert "金13,000,000円" in squash(pdf_text(admin.get(listed[0]["href"]).data, tmp_path))
    audit = admin.get("/audit").get_data(as_text=True)
    assert "document-generate" in audit and listed[0]["sha256"] in audit
    # The auditor lists and downloads, and changes nothing.
    auditor = client_as("auditor")
    assert [d["sha256"] for d in documents(auditor)] == [d["sha256"] for d in listed]
    assert auditor.get(listed[0]["href"]).status_code == 200
    token = csrf_token(auditor, "/contract")  # the logout form's
    assert auditor.post("/contract", data={**CONTRACT, "csrf_token": token}).status_code == 403
    assert (
        auditor.post(
            "/contract/documents",
            data={"kind": "form1", "issued_on": "2026-07-21", "csrf_token": token},
        ).status_code
        == 403
    )


def test_bad_contract_input_is_refused_in_japanese_first(client_as: ClientFactory) -> None:
    """Bad dates, amounts and missing fields are refused with the reason, Japanese first, and
    nothing is saved; no form is generated before the details are saved."""
    admin = client_as("admin")
    response = generate(admin, "form1")
    assert response.status_code == 400
    assert "先に契約内容を保存してください" in response.get_data(as_text=True)
    cases = {
        "work_name": ("", "業務名: 入力してください"),
        "period_end": ("2026-13-01", "日付は YYYY-MM-DD で入力してください"),
        "amount_yen": ("十万円", "数字（整数）で入力してください"),
        "representative": ("x" * 101, "100文字以内で入力してください"),
    }
    for name, (value, message) in cases.items():
        response = save_contract(admin, **{name: value})
        page = response.get_data(as_text=True)
        assert response.status_code == 400, name
        assert "保存できません" in page and message in page, (name, notice(page))
    response = save_contract(admin, amount_yen="0")
    assert "1円から20億円まで" in response.get_data(as_text=True)
    response = save_contract(admin, period_end="2026-07-01")
    assert response.status_code == 400
    assert "履行期間の終了は開始より後" in response.get_data(as_text=True)
    response = save_contract(admin, started_on="2027-03-01")
    assert "着手年月日: 履行期間内の日付" in response.get_data(as_text=True)
    assert "契約内容が未登録です" in admin.get("/contract").get_data(as_text=True)
    assert save_contract(admin).status_code == 302
    token = csrf_token(admin, "/contract")
    bad_kind = admin.post(
        "/contract/documents",
        data={"kind": "form9", "issued_on": "2026-07-21", "csrf_token": token},
    )
    assert bad_kind.status_code == 400
    bad_date = generate(admin, "form1", issued_on="21/07/2026")
    assert bad_date.status_code == 400
    assert "日付は YYYY-MM-DD で入力してください" in bad_date.get_data(as_text=True)
    assert documents(admin) == []
    assert client_as("chiyoda").get("/contract").status_code == 403


def test_cards_handed_over_by_place_and_municipality_with_the_advertising_cap(
    client_as: ClientFactory,
    month: tuple[list[dict[str, Any]], list[dict[str, str]]],
    tmp_path: Path,
) -> None:
    """R20: issuance-support visits record the cards handed over; the reports show them by
    place and by the place's municipality, and the completion report the cap on advertising
    (cards × ¥2,000, specification §7(1)④). Bad counts are refused."""
    visits, _ = month
    admin = client_as("admin")
    cards = cards_for(visits)
    support = next(v for v in visits if v["kind"] == "application-support")
    refused = record_cards(admin, support["id"], 5)
    assert refused.status_code == 400
    assert "交付枚数は交付支援の訪問だけに記録します" in refused.get_data(as_text=True)
    first = next(iter(cards))
    for bad, message in (("-1", "0から10000まで"), ("たくさん", "数字（整数）で入力してください")):
        response = record_cards(admin, first, bad)
        assert response.status_code == 400 and message in response.get_data(as_text=True)
    for visit_id, n in cards.items():
        assert record_cards(admin, visit_id, n, remarks="=1+1 受付混雑").status_code == 302

    by_place: dict[tuple[str, str], list[int]] = {}
    by_municipality: dict[str, list[int]] = {}
    for visit in visits:
        if visit["id"] in cards:
            name = municipality_label(visit["municipality"])
            place = by_place.setdefault((visit["facility"], name), [0, 0])
            town = by_municipality.setdefault(name, [0, 0])
            for bucket in (place, town):
                bucket[0] += 1
                bucket[1] += cards[visit["id"]]
    book = openpyxl.load_workbook(io.BytesIO(admin.get("/reports/completion.xlsx").data))
    sheets = {sheet["A1"].value: sheet for sheet in book.worksheets}
    place_sheet = sheets["交付枚数（実施場所別）"]
    got = {
        (r[0], r[1]): [r[2], r[3]]
        for r in place_sheet.iter_rows(min_row=4, values_only=True)
        if r[0] != "合計"
    }
    assert got == {k: v for k, v in by_place.items()}
    town_sheet = sheets["交付枚数（市区町村別）"]
    got_towns = {
        r[0]: [r[1], r[2]]
        for r in town_sheet.iter_rows(min_row=4, values_only=True)
        if r[0] != "合計"
    }
    assert got_towns == by_municipality
    summary = {
        r[0]: r[1] for r in sheets[next(iter(sheets))].iter_rows(min_row=4, values_only=True)
    }
    total = sum(cards.values())
    assert summary["交付枚数"] == total
    assert summary["広告費上限（交付枚数×2,000円）"] == f"{total * 2000:,}円"
    # The work log of an issuance visit shows its cards and the remarks, kept as text.
    log = openpyxl.load_workbook(io.BytesIO(admin.get(f"/reports/worklog/{first}.xlsx").data))
    values = {r[0]: r[1] for r in log.worksheets[0].iter_rows(min_row=4, values_only=True)}
    assert values["交付枚数"] == cards[first]
    assert values["所見"] == "=1+1 受付混雑"
    cell = next(
        c for c in log.worksheets[0]["B"] if c.value == "=1+1 受付混雑"
    )  # stored as text, not as a formula
    assert cell.data_type == "s"
    csv_rows = read_csv(admin.get("/reports/counts/cards-place.csv").data)
    assert csv_rows[-1][-1] == str(total)
    # A municipality user sees the cards of places in their municipality only (none here).
    scoped = read_csv(client_as("chiyoda").get("/reports/counts/cards-place.csv").data)
    assert scoped == [["実施場所", "市区町村", "交付支援回数", "交付枚数"]]


def test_wareki_and_the_schedule_grid() -> None:
    """The forms' dates in the Japanese era (令和元年 for 2019), and 様式2's month columns."""
    assert paper.wareki("2019-05-01") == "令和元年5月1日"
    assert paper.wareki("2026-08-03") == "令和8年8月3日"
    with pytest.raises(ValueError):
        paper.wareki("2019-04-30")
    assert paper.months_between("2026-11-20", "2027-02-26") == [
        "2026-11",
        "2026-12",
        "2027-01",
        "2027-02",
    ]
    figures = CompletionFigures(
        ["2026-08-03"], [], 40, {"applied": 2, "forwarded": 1, "abandoned": 0}, 7
    )
    assert figures.sessions == 3 and figures.advertising_cap_yen == 14000


def test_the_migration_keeps_existing_visits(database_url: str) -> None:
    """0007 on a database with a visit from before: it gets no cards and no remarks, the new
    tables are empty; and it goes back down keeping the visit."""
    migrate(database_url, "0006")
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO facility (name, kind, municipality, address)"
            " VALUES ('公民館', 'public', '202011', '')"
        )
        connection.exec_driver_sql(
            "INSERT INTO visit (facility_id, date, kind, device_id, lead, staff, start_time,"
            " end_time, incidents) VALUES (1, '2026-08-03', 'card-issuance-support', 'tab-a',"
            " 'op-lead', '[\"op-lead\", \"op-two\"]', '09:00', '16:00', '')"
        )
    migrate(database_url)
    with Session(engine) as session:
        visit = session.get(VisitRow, 1)
        assert visit is not None and visit.cards_issued == 0 and visit.remarks == ""
        assert session.get(ContractRow, 1) is None
    engine.dispose()
    migrate_down(database_url, "0006")
    engine = make_engine(database_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT date FROM visit").scalar() == "2026-08-03"
        tables = set(inspect(connection).get_table_names())
    engine.dispose()
    assert "contract" not in tables and "paper_document" not in tables


def test_the_work_log_of_each_visit_day_against_the_tally(
    web_app: Flask,
    client_as: ClientFactory,
    month: tuple[list[dict[str, Any]], list[dict[str, str]]],
    tmp_path: Path,
) -> None:
    """R21, R25: 業務日誌 per visit day as XLSX and PDF: the staff present by name, times,
    sessions by mode and outcome (equal to the tally for that tablet and day), the day's
    incident reports, the device's erasure records (verified, signed) and its chain, and the
    lead's remarks (a remark typed as a formula stays text)."""
    visits, rows = month
    admin = client_as("admin")
    for operator, name in (("op-lead", "現場 一郎"), ("op-two", "補助 花子")):
        assert register_operator(admin, operator, name).status_code == 302
    chosen = next(v for v in visits if v["kind"] == "application-support")
    hostile = '=HYPERLINK("http://example.invalid","x")'
    assert record_cards(admin, chosen["id"], "", remarks=hostile).status_code == 302
    incident = {
        "occurred_on": chosen["date"],
        "what": "受付票の置き忘れ",
        "how_much": "1件",
        "location": chosen["facility"],
        "how": "机上に残置",
        "response": "回収済み",
        "csrf_token": csrf_token(admin, "/incidents"),
    }
    assert admin.post("/incidents", data=incident).status_code == 302
    noon = dt.datetime.fromisoformat(chosen["date"] + "T12:00:00+09:00").timestamp()
    with Session(hubweb(web_app).engine) as session:
        for n, (verified, signed) in enumerate(((True, True), (True, False), (False, False))):
            record_id = add_record(session, chosen["device"], "erasure", noon + n)
            session.add(
                ErasureRow(
                    record_id=record_id,
                    device_id=chosen["device"],
                    at=noon + n,
                    level="session",
                    verified=verified,
                    signed=signed,
                    record={},
                )
            )
        session.commit()

    for visit in (v for v in visits if v["kind"] == "application-support"):
        mine = [r for r in rows if r["device_id"] == visit["device"] and r["date"] == visit["date"]]
        tally: dict[str, Counter[str]] = {}
        for row in mine:
            tally.setdefault(MODE_LABELS[row["mode"]], Counter())[row["outcome"]] += 1
        book = openpyxl.load_workbook(
            io.BytesIO(admin.get(f"/reports/worklog/{visit['id']}.xlsx").data)
        )
        counted = {
            r[0]: list(r[1:6])
            for r in book.worksheets[1].iter_rows(min_row=4, values_only=True)
            if r[0] != "合計"
        }
        assert counted == {
            mode: [*(c[o] for o in COUNTED), sum(c.values())] for mode, c in tally.items()
        }, visit["date"]
        device_row = next(book.worksheets[2].iter_rows(min_row=4, values_only=True))
        assert device_row[:2] == (visit["device"], len(mine))

    book = openpyxl.load_workbook(
        io.BytesIO(admin.get(f"/reports/worklog/{chosen['id']}.xlsx").data)
    )
    head = {r[0]: r[1] for r in book.worksheets[0].iter_rows(min_row=4, values_only=True)}
    assert head["従事者"] == "op-lead 現場 一郎, op-two 補助 花子"
    assert head["時間"] == "09:30-15:30"
    assert head["事故報告"] == "第1号"
    assert head["所見"] == hostile
    remark = next(c for c in book.worksheets[0]["B"] if c.value == hostile)
    assert remark.data_type == "s"  # text, never a formula
    device_row = next(book.worksheets[2].iter_rows(min_row=4, values_only=True))
    assert device_row[2:5] == (3, "2/3", "1/3")
    assert len(list(book.worksheets[3].iter_rows(min_row=4, values_only=True))) == 3
    csv_rows = read_csv(admin.get(f"/reports/worklog/{chosen['id']}.csv").data)
    assert ["所見", "'" + hostile] in csv_rows
    text = pdf_text(admin.get(f"/reports/worklog/{chosen['id']}.pdf").data, tmp_path)
    mine = [r for r in rows if r["device_id"] == chosen["device"] and r["date"] == chosen["date"]]
    c = Counter(r["outcome"] for r in mine)
    total_line = next(
        ln for ln in text.splitlines() if ln.strip().startswith("合計") and "tab-" not in ln
    )
    assert total_line.split()[1:] == [*(str(c[o]) for o in COUNTED), str(len(mine))]
    assert "業務日誌" in text and "現場 一郎" in text
    # Kept as a version, listed with its hash beside the forms.
    token = csrf_token(admin, f"/reports/worklog/{chosen['id']}")
    kept = admin.post(f"/reports/worklog/{chosen['id']}/keep", data={"csrf_token": token})
    assert kept.status_code == 302
    [listed] = documents(admin)
    assert listed["title"] == f"業務日誌 {chosen['date']}（訪問 {chosen['id']}）"
    body = admin.get(listed["href"]).data
    assert hashlib.sha256(body).hexdigest() == listed["sha256"]
    assert "現場 一郎" in pdf_text(body, tmp_path)


def test_sessions_outside_the_period_stay_out_of_form_4(
    web_app: Flask,
    client_as: ClientFactory,
    month: tuple[list[dict[str, Any]], list[dict[str, str]]],
    tmp_path: Path,
) -> None:
    """様式4 counts the contract's period. When every record lies within it the date conditions
    are skipped (the same counts, faster on SQLite); a session after the period turns them back
    on and is not counted."""
    _, rows = month
    period = Scope(CONTRACT["period_start"], CONTRACT["period_end"])
    with Session(hubweb(web_app).engine) as session:
        assert covering(session, period).filter_dates is False
    late = generated_statistics(7, seed=5)
    for row in late:
        row["date"] = "2027-03-05"  # after the period
    store_statistics(web_app, late)
    with Session(hubweb(web_app).engine) as session:
        planned = covering(session, period)
        assert planned.filter_dates is True
        # Most records are in it: conditions no index serves (SQLite scans), the same counts.
        assert planned.index_dates is False
        assert by_day(session, planned).rows == by_day(session, period).rows
        one_day = covering(session, Scope(rows[0]["date"], rows[0]["date"]))
        assert one_day.filter_dates and one_day.index_dates  # a narrow range keeps the index
        [day, _total] = by_day(session, one_day).rows
        assert [day] == [r for r in by_day(session, Scope()).rows if r[0] == rows[0]["date"]]
    admin = client_as("admin")
    save_contract(admin)
    generate(admin, "form4")
    body = admin.get(documents(admin)[0]["href"]).data
    flat = squash(pdf_text(body, tmp_path))
    assert f"申請サポート件数{len(rows):,}件" in flat


def test_counts_by_the_place_visited_against_the_tally(
    web_app: Flask,
    client_as: ClientFactory,
    month: tuple[list[dict[str, Any]], list[dict[str, str]]],
) -> None:
    """R21 (実施個所別): a tablet's sessions of a day count for the visit planned for that tablet
    and day, whatever its site label says; a day without a visit is 予定外 with the label."""
    visits, rows = month
    unplanned = generated_statistics(5, seed=11)
    for row in unplanned:
        row.update(device_id="tab-a", date="2026-08-01", site="旧ラベル")  # a Saturday
    relabelled = generated_statistics(4, seed=12)
    first = next(v for v in visits if v["kind"] == "application-support")
    for row in relabelled:
        row.update(device_id=first["device"], date=first["date"], site="設定ミスの会場名")
    store_statistics(web_app, unplanned + relabelled)
    place_of = {
        (v["device"], v["date"]): (v["facility"], municipality_label(v["municipality"]))
        for v in visits
    }
    tally: dict[tuple[str, str], Counter[str]] = {}
    for row in rows + relabelled:
        tally.setdefault(place_of[(row["device_id"], row["date"])], Counter())[row["outcome"]] += 1
    table = read_csv(client_as("admin").get("/reports/counts/place.csv").data)
    assert table[0] == ["実施場所", "市区町村", *OUTCOME_COLUMNS]
    got = {(r[0], r[1]): [int(n) for n in r[2:]] for r in table[1:-1]}
    unscheduled = got.pop(("予定外（ハブに訪問予定なし）（旧ラベル）", ""))
    assert sum(unscheduled[:4]) == unscheduled[4] == 5
    assert got == {place: [*(c[o] for o in COUNTED), sum(c.values())] for place, c in tally.items()}
    assert int(table[-1][-1]) == len(rows) + 9
