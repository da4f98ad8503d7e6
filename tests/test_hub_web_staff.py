"""The hub as staff meet it (issue 21): Japanese everywhere from one catalogue, municipalities
by name and by whether they can receive packets, outcomes counted apart, the devices page filled
from what the tablets send, evidence that shows its own gaps, charts with axes and values, and
export content types said once."""

from __future__ import annotations

import datetime as dt
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.db import AuditRow, DeviceStatusRow, ErasureRow
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import IncidentRow
from fieldkit.hub.web.text import CATALOGUE, TEXT
from fieldkit.municipalities import MunicipalityTable, offer
from fieldkit.pki import KitPki, load_ed25519_private
from fieldkit.sync.wire import Statistics
from fieldkit.textcatalogue import TextCatalogue
from fieldkit.wipe.record import ErasureRecord, EvidenceStore
from tests.hubkit import MUNICIPALITY, tablet_dir
from tests.hubweb import (
    ClientFactory,
    add_record,
    csrf_token,
    generated_month,
    login,
    read_csv,
    store_packet,
    store_statistics,
)
from tests.support.municipality import MUNICIPALITY_MACHINES

DAY = "2026-08-03"

# ---- the ASCII check ------------------------------------------------------------------------

# What may stand in ASCII alone on a Japanese page: identifiers the test data gives (account
# names, the hub's own and the fixtures' audit actors, device and operator ids), formats and
# hashes, and units. Short on purpose: anything else in ASCII alone is English that escaped the
# catalogue.
DATA_IDS = {
    "admin", "chiyoda", "osaka", "auditor", "test", "hub", "tab-a", "tab-b", "op-lead", "op-two",
    "CSV", "XLSX", "PDF", "ZIP", "JSON", "SHA-256", "QR", "ID", "fieldkit",
}  # fmt: skip
ALLOWED = [
    re.compile(r"^[\W\d_]*$"),  # digits, dates, times, punctuation: no letters
    re.compile(r"^[0-9a-f]{8,}…?$"),  # record ids, hashes, fingerprints
    re.compile(r"^[0-9a-f]{8,}\.(pdf|xlsx|csv|json)$"),  # generated file names
    re.compile(r"^[A-Z2-7]{16,}$"),  # the TOTP key shown once at set-up (base32)
    re.compile(r"^\d+(\.\d+)?\s?(h|mm|MB|KB)$"),  # units
    re.compile(r"^v?\d+\.\d+\.\d+$"),  # a software version
]
ATTRIBUTES = ("title", "alt", "aria-label", "placeholder")


class Words(HTMLParser):
    """The words a page shows a reader: text and the attributes read aloud, except inside
    <code> (commands, hashes), <script>/<style>, and elements marked lang="en" (the switch
    to English names itself in English)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.found: list[str] = []

    def skipping(self) -> bool:
        return any(skip for _, skip in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        skip = tag in ("code", "script", "style") or values.get("lang") == "en"
        if tag not in ("input", "br", "img", "meta", "link", "hr", "rect", "line"):
            self.stack.append((tag, skip))
        if skip or self.skipping():
            return
        for name in ATTRIBUTES:
            if values.get(name):
                self.found.append(str(values[name]))
        if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
            self.found.append(str(values["value"]))

    def handle_endtag(self, tag: str) -> None:
        for n in range(len(self.stack) - 1, -1, -1):
            if self.stack[n][0] == tag:
                del self.stack[n:]
                break

    def handle_data(self, data: str) -> None:
        if not self.skipping() and data.strip():
            self.found.append(data.strip())


def english_alone(html: str) -> list[str]:
    """Every string on the page in ASCII letters alone that the allow-list does not explain."""
    parser = Words()
    parser.feed(html)
    bad = []
    for text in parser.found:
        if not text.isascii() or not re.search(r"[A-Za-z]", text):
            continue
        words = [w for w in re.split(r"[\s,:;()/·|→←]+", text) if w]
        if all(w in DATA_IDS or any(p.match(w) for p in ALLOWED) for w in words):
            continue
        bad.append(text)
    return bad


def test_the_check_finds_english_and_lets_ids_pass() -> None:
    """The checker itself, both ways: Flask-Login's prompt and a bare English label fail it;
    ids, hashes, dates and the language switch (lang="en") pass."""
    page = (
        '<p class="notice">Please log in to access this page.</p><label>Site <input></label>'
        "<td>tab-a</td><td>2026-08-03 10:00</td><td>" + "ab" * 16 + "</td>"
        '<a lang="en" href="?lang=en">English</a><code>fieldkit packet receipt</code>'
        '<svg aria-label="Applications"></svg>'
    )
    assert english_alone(page) == ["Please log in to access this page.", "Site", "Applications"]


# ---- a day at the hub -----------------------------------------------------------------------


def signed_chain(
    pki: KitPki, tmp_path: Path, device: str, sessions: list[tuple[str, bool]], at: float
) -> list[ErasureRecord]:
    """Session erasure records of ``device`` as its wipe writes them (hash-chained, signed with
    its enrolled key): (sid, passed) each; a failed one names the holder that did not answer."""
    key = load_ed25519_private(tablet_dir(pki, device) / "signing.key")
    store = EvidenceStore(tmp_path / f"{device}-evidence.sqlite")
    records = []
    for n, (sid, passed) in enumerate(sessions):
        finished = at + 60 * (n + 1)
        records.append(
            store.append(
                ErasureRecord(
                    kind="session",
                    sid=sid,
                    device=device,
                    started=finished - 3,
                    finished=finished,
                    ok=passed,
                    failures=[] if passed else ["holder capture did not answer"],
                ),
                key,
            )
        )
    store.close()
    return records


def keep(session: Session, record: ErasureRecord) -> None:
    """An erasure record as ingest keeps it: signed (checked), verified as the device says."""
    rid = add_record(session, record.device, "erasure", record.finished)
    session.add(
        ErasureRow(
            record_id=rid,
            device_id=record.device,
            at=record.finished,
            level="session",
            verified=record.ok,
            signed=True,
            record=record.model_dump(mode="json"),
        )
    )


def session_started(session: Session, device: str, sid: str, at: float) -> None:
    """The kiosk's audit event for a session it started (as sync carries it to the hub)."""
    rid = add_record(session, device, "audit", at)
    session.add(
        AuditRow(
            record_id=rid,
            device_id=device,
            at=at,
            actor="op-lead",
            action="start",
            outcome="ok",
            detail={"from": "", "to": "mode", "session": sid},
        )
    )


@pytest.fixture
def staff_day(web_app: Flask, pki: KitPki, tmp_path: Path) -> dict[str, Any]:
    """A month of visits and sessions, packets waiting, and on DAY: tab-a ran five sessions,
    three wiped and verified, one wipe deliberately failed (a holder did not answer), one with
    no erasure record at all; tab-b ran two, both wiped."""
    visits, rows = generated_month(web_app)
    at_ts = dt.datetime.fromisoformat(DAY + "T10:00:00").replace(tzinfo=JST).timestamp()
    a_sessions = [("a1" * 16, True), ("a2" * 16, True), ("a3" * 16, False), ("a4" * 16, True)]
    b_sessions = [("b1" * 16, True), ("b2" * 16, True)]
    a_records = signed_chain(pki, tmp_path, "tab-a", a_sessions, at_ts)
    b_records = signed_chain(pki, tmp_path, "tab-b", b_sessions, at_ts)
    missing = "a5" * 16
    with Session(hubweb(web_app).engine) as session:
        for n, (sid, _) in enumerate([*a_sessions, (missing, False)]):
            session_started(session, "tab-a", sid, at_ts + 60 * n)
        for n, (sid, _) in enumerate(b_sessions):
            session_started(session, "tab-b", sid, at_ts + 60 * n)
        for record in [*a_records, *b_records]:
            keep(session, record)
        session.add(
            IncidentRow(
                occurred_on=DAY,
                what="消去失敗 テスト",
                how_much="1",
                location="さくら苑",
                how="警報",
                response="",
                reported_at=time.time(),
                reported_by="hub",
                status="draft",
                source="test:draft",
            )
        )
        session.commit()
    store_packet(web_app, pki, MUNICIPALITY, b"sealed application")
    return {"visits": visits, "rows": rows, "missing": missing, "failed": "a3" * 16}


def pages(app: Flask, role: str) -> list[str]:
    """Every page the role can open (GET), with real ids from the data."""
    with Session(hubweb(app).engine) as session:
        from fieldkit.hub.web.models import VisitRow

        visit = session.scalars(select(VisitRow).order_by(VisitRow.id)).first()
        draft = session.scalars(select(IncidentRow).where(IncidentRow.status == "draft")).first()
    assert visit is not None and draft is not None
    common = [
        "/",
        "/reports",
        *(f"/reports/counts/{name}" for name in ("place", "site", "municipality", "sex-age")),
        *(f"/reports/counts/{name}" for name in ("day", "month", "cards-place")),
        "/reports/counts/cards-municipality",
        "/account/password",
        "/no-such-page",
    ]
    if role == "municipality":
        return [*common, "/packets"]
    return [
        *common,
        "/reports/completion",
        f"/reports/worklog/{visit.id}",
        "/reports/monthly/2026-08",
        "/devices",
        "/devices/municipalities",
        "/operators",
        "/sites",
        "/sites/calendar?month=2026-08",
        f"/sites/visits/{visit.id}",
        "/accounts",
        "/incidents",
        f"/incidents/{draft.id}/complete",
        f"/evidence?date={DAY}",
        f"/evidence?date={DAY}&device=tab-a",
        "/contract",
        "/expenses",
        "/deletion",
        "/audit",
        "/packets",  # a 403 page for these roles
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_hub_page_reads_japanese(
    web_app: Flask, client_as: ClientFactory, staff_day: dict[str, Any]
) -> None:
    """Issue 21 item 3: every page each role opens, the login pages, the login prompt, a
    refused form and the error pages are Japanese: no string in ASCII letters alone but ids,
    formats and units. Flask-Login's English prompt never appears."""
    seen: dict[str, list[str]] = {}
    anonymous = web_app.test_client()
    prompt = anonymous.get("/devices", follow_redirects=True)
    seen["/devices (logged out)"] = english_alone(prompt.get_data(as_text=True))
    assert "このページを見るには、ログインしてください。" in prompt.get_data(as_text=True)
    assert "Please log in" not in prompt.get_data(as_text=True)
    seen["/login"] = english_alone(anonymous.get("/login").get_data(as_text=True))
    refused = anonymous.post("/login", data={"username": "admin", "password": "x"})
    seen["/login (refused)"] = english_alone(refused.get_data(as_text=True))
    fresh = web_app.test_client()
    token = csrf_token(fresh, "/login")
    fresh.post("/login", data={"csrf_token": token, "username": "auditor", "password": "x" * 20})
    for role, user in (("admin", "admin"), ("municipality", "chiyoda"), ("auditor", "auditor")):
        client = client_as(user)
        for path in pages(web_app, role):
            response = client.get(path)
            assert response.status_code in (200, 403, 404), (path, response.status_code)
            seen[f"{user} {path}"] = english_alone(response.get_data(as_text=True))
    admin = client_as("admin")
    # A refused form (flash and field errors) and a form posted without its CSRF token.
    bad = admin.post("/operators", data={"csrf_token": csrf_token(admin, "/operators")})
    seen["POST /operators (refused)"] = english_alone(bad.get_data(as_text=True))
    expired = admin.post("/facilities-nowhere")
    seen["POST 404"] = english_alone(expired.get_data(as_text=True))
    no_token = admin.post("/sites/facilities", data={"name": "x"})
    assert no_token.status_code == 400
    seen["POST without CSRF"] = english_alone(no_token.get_data(as_text=True))
    bad_date = admin.get("/evidence?date=yesterday")
    assert bad_date.status_code == 400 and "YYYY-MM-DD" in bad_date.get_data(as_text=True)
    seen["400"] = english_alone(bad_date.get_data(as_text=True))
    assert {page: words for page, words in seen.items() if words} == {}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_english_on_request_and_the_prompt_without_the_catalogue(
    web_app: Flask, client_as: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """?lang=en gives the same pages in English, kept for the session; ?lang=ja goes back. And
    the protection shown both ways: without the catalogue's prompt, Flask-Login's English one
    is what a logged-out reader sees, and the check catches it."""
    admin = client_as("admin")
    english = admin.get("/devices?lang=en").get_data(as_text=True)
    assert '<html lang="en">' in english and ">Devices</h1>" in english and "端末" not in english
    assert ">Sites and visits</a>" in admin.get("/sites").get_data(as_text=True)
    japanese = admin.get("/sites?lang=ja").get_data(as_text=True)
    assert '<html lang="ja">' in japanese and ">会場・訪問</h1>" in japanese
    from fieldkit.hub.web.extensions import login_manager

    monkeypatch.setattr(login_manager, "login_message", "Please log in to access this page.")
    monkeypatch.setattr(login_manager, "localize_callback", None)
    page = web_app.test_client().get("/devices", follow_redirects=True).get_data(as_text=True)
    assert english_alone(page) == ["Please log in to access this page."]


def test_the_catalogue_has_both_languages_for_every_phrase() -> None:
    """Every phrase has a Japanese and an English that are not blank; a phrase missing either
    is refused when the catalogue is made."""
    assert len(CATALOGUE) == len(TEXT) > 300
    for key, (ja, en) in TEXT.items():
        assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", ja) or key in ("switch_lang",), key
        assert en.strip(), key
    with pytest.raises(ValueError, match="needs a Japanese and an English"):
        TextCatalogue({"half": ("日本語だけ", "")})


# ---- municipalities (item 4) ----------------------------------------------------------------


def test_the_offer_splits_municipalities_by_receiver_key() -> None:
    """Only municipalities with a receiver key can be sent an application; the rest are for
    forwarding; a key for a code outside the table is named."""
    table = MunicipalityTable.load(["20"])
    split = offer(table, {"202011", "202029", "131016"})
    assert [m.name for m in split.receivers] == ["長野市", "松本市"]
    assert "上田市" in [m.name for m in split.forward_only]
    assert len(split.receivers) + len(split.forward_only) == len(table)
    assert split.unknown_keys == ["131016"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_municipalities_page_offers_by_key_and_names_every_municipality(
    web_app: Flask, client_as: ClientFactory, pki: KitPki
) -> None:
    """Issue 21 item 4: the page lists 長野市 (its key imported) as able to receive, and 上田市
    (no key) for forwarding with the reason; names, not codes, on the pages and in exports
    (with the prefecture, as this kit's table spans several)."""
    MUNICIPALITY_MACHINES.register(pki, "202011")
    admin = client_as("admin")
    page = admin.get("/devices/municipalities").get_data(as_text=True)
    receivers, forward_only = page.split("回付のみの市区町村")
    assert "<td>長野県長野市</td><td>202011</td>" in receivers and "上田市" not in receivers
    assert "<td>長野県上田市</td><td>202037</td>" in forward_only
    assert "受信鍵が登録されていないため、申請データを受け取れません" in forward_only
    store_statistics(
        web_app,
        [
            {
                "record_id": f"{n:032x}",
                "device_id": "tab-a",
                "site": "公民館",
                "date": DAY,
                "municipality": code,
                "sex": "female",
                "age_band": "65-74",
                "mode": "support",
                "outcome": "applied",
            }
            for n, code in enumerate(["202011", "202011", "000000", "131016"])
        ],
    )
    table = read_csv(admin.get("/reports/counts/municipality.csv").data)
    assert [row[0] for row in table[1:]] == ["回答なし", "東京都千代田区", "長野県長野市", "合計"]
    dashboard = admin.get("/").get_data(as_text=True)
    assert "<title>長野県長野市: 2</title>" in dashboard and "202011" not in dashboard
    assert "65〜74歳" in admin.get("/reports/counts/sex-age").get_data(as_text=True)
    form = admin.get("/accounts").get_data(as_text=True)
    assert '<option value="202011">長野県長野市</option>' in form


# ---- outcomes, devices, evidence, charts, content types (item 7) ----------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_declined_application_is_counted_as_declined(
    web_app: Flask, client_as: ClientFactory
) -> None:
    """R2, R21: declined (no agreement) and abandoned are counted apart, in every table."""
    outcomes = ["applied", "applied", "forwarded", "declined", "declined", "abandoned"]
    for outcome in outcomes:  # the hub link's format takes a declined session
        Statistics.model_validate(
            {
                "site": "公民館",
                "date": DAY,
                "municipality": "202011",
                "sex": "male",
                "age_band": "75+",
                "mode": "support",
                "outcome": outcome,
            }
        )
    store_statistics(
        web_app,
        [
            {
                "record_id": f"{n:032x}",
                "device_id": "tab-a",
                "site": "公民館",
                "date": DAY,
                "municipality": "202011",
                "sex": "male",
                "age_band": "75+",
                "mode": "support",
                "outcome": outcome,
            }
            for n, outcome in enumerate(outcomes)
        ],
    )
    admin = client_as("admin")
    table = read_csv(admin.get("/reports/counts/site.csv").data)
    assert table[0] == ["会場", "申請", "回付", "同意なし", "中断", "合計"]
    assert table[1] == ["公民館", "2", "1", "2", "1", "6"]
    summary = dict(row[:2] for row in read_csv(admin.get("/reports/completion.csv").data)[2:14])
    assert summary["同意なし"] == "2" and summary["中断"] == "1"


def test_a_tablet_reports_its_version_and_backlog_to_the_devices_page(
    make_courier: Any, make_ingest: Any, database_url: str, tmp_path: Path, pki: KitPki
) -> None:
    """Issue 21 item 7: sync's roster request carries the tablet's status (version, outbox
    backlog, its oldest record); hub ingest keeps the latest; the devices page shows it, with
    the last contact, instead of "—"."""
    from fieldkit import __version__
    from fieldkit.hub.web.app import create_app
    from tests.hubweb import web_config

    ingest = make_ingest(database_url)
    courier = make_courier("tab-a")
    deadline = time.monotonic() + 30
    row = None
    while time.monotonic() < deadline:
        with Session(ingest.engine) as session:
            row = session.get(DeviceStatusRow, "tab-a")
        if row is not None:
            break
        time.sleep(0.1)
    assert row is not None, "no status at the hub"
    assert row.version == __version__ and row.outbox_pending == 0
    # Offline for a while: records wait; back online, the next report says so.
    courier.link.stop()
    made = time.time()
    for _ in range(3):
        courier.submit_record(
            "statistics",
            {
                "site": "s",
                "date": DAY,
                "municipality": "202011",
                "sex": "female",
                "age_band": "75+",
                "mode": "support",
                "outcome": "declined",
            },
        )
    status = courier.device_status()
    assert status.outbox_pending == 3 and status.outbox_oldest_at is not None
    assert status.outbox_oldest_at >= made - 1
    ingest.keep_status("tab-a", status)
    app = create_app({"FIELDKIT": web_config(tmp_path, pki, database_url), "TESTING": True})
    from fieldkit.hub.web.auth import create_account

    with Session(hubweb(app).engine) as session:
        create_account(session, "admin", "correct horse battery", "admin", actor="test")
        session.commit()
    client = app.test_client()
    assert login(client, "admin").status_code == 302
    page = client.get("/devices").get_data(as_text=True)
    cells = re.search(r"<tr[^>]*><td>tab-a</td>(.*?)</tr>", page, re.S)
    assert cells is not None
    row_text = re.sub(r"<[^>]+>", "|", cells.group(1))
    assert "3件（最も古いもの" in row_text and __version__ in row_text
    assert "報告なし" in row_text  # no antivirus report and no erasure record yet: said so
    assert "—|" not in row_text.replace("|—|", "|")  # no bare dash where a value belongs
    hubweb(app).engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_evidence_page_flags_every_session_without_a_passing_erasure_record(
    web_app: Flask, client_as: ClientFactory, staff_day: dict[str, Any]
) -> None:
    """R24, issue 21: tab-a's deliberately failed wipe and its session with no erasure record
    are red rows with the reason; tab-a's day row is red; tab-b, every session wiped, is not.
    The exports carry the same verdicts."""
    auditor = client_as("auditor")
    page = auditor.get(f"/evidence?date={DAY}").get_data(as_text=True)
    assert "要確認: 2件" in page
    rows = re.findall(r"<tr( class=\"alarm-row\")?><td>(tab-[ab])</td>(.*?)</tr>", page, re.S)
    day_rows = [r for r in rows if "<td>5</td>" in r[2] or "<td>2</td><td>2</td>" in r[2]]
    by_device = {device: (flag, cells) for flag, device, cells in day_rows}
    assert (
        by_device["tab-a"][0]
        and "<td>5</td><td>3</td><td>1</td><td>1</td>" in by_device["tab-a"][1]
    )
    assert not by_device["tab-b"][0] and "問題なし" in by_device["tab-b"][1]
    failed = re.search(
        rf'<tr class="alarm-row"><td>tab-a</td><td>{staff_day["failed"]}</td>(.*?)</tr>', page
    )
    # The signed record's English reason, said in Japanese (the record keeps its words).
    assert failed and "カメラが消去の確認に応答しませんでした" in failed.group(1)
    assert "did not answer" not in failed.group(1)
    missing = re.search(
        rf'<tr class="alarm-row"><td>tab-a</td><td>{staff_day["missing"]}</td>(.*?)</tr>', page
    )
    assert missing and "消去記録が届いていません" in missing.group(1)
    assert page.count('<tr class="alarm-row">') == 4  # day row, two sessions, the failed record
    csv = read_csv(auditor.get(f"/evidence.csv?date={DAY}").data)
    assert ["tab-a", "5", "3", "1", "1", "連続", "要確認"] in csv
    assert ["tab-b", "2", "2", "0", "0", "連続", "問題なし"] in csv
    quiet = auditor.get(f"/evidence?date={DAY}&device=tab-b").get_data(as_text=True)
    assert "alarm-row" not in quiet and "すべての申請に、消去を確認した記録があります" in quiet


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_gap_in_the_chain_is_flagged_on_its_day(
    web_app: Flask, client_as: ClientFactory, staff_day: dict[str, Any]
) -> None:
    """A record that never reached the hub breaks tab-b's chain: its day row turns red too."""
    with Session(hubweb(web_app).engine) as session:
        first = session.scalars(
            select(ErasureRow).where(ErasureRow.device_id == "tab-b").order_by(ErasureRow.at)
        ).first()
        assert first is not None
        session.delete(first)
        session.commit()
    page = client_as("admin").get(f"/evidence?date={DAY}&device=tab-b").get_data(as_text=True)
    row = re.search(r'<tr class="alarm-row"><td>tab-b</td><td>2</td>(.*?)</tr>', page, re.S)
    assert row and "最初の記録からたどり着けません" in row.group(1) and "要確認" in row.group(1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_charts_have_axes_values_and_names(
    web_app: Flask, client_as: ClientFactory, staff_day: dict[str, Any]
) -> None:
    """The dashboard's charts: both axes drawn and titled, round ticks, every bar's value
    written beside it, municipalities by name, and the numbers in the description."""
    page = client_as("admin").get("/").get_data(as_text=True)
    charts = re.findall(r"<svg class=\"chart\".*?</svg>", page, re.S)
    assert len(charts) == 2
    for chart in charts:
        assert chart.count('class="axis-line"') == 2
        assert 'class="tick' in chart and ">0</text>" in chart
        assert "申請件数（件）" in chart
        bars = re.findall(r"<title>(.*?): (\d+)</title>", chart)
        values = re.findall(r'class="value [a-z]+">(\d+)</text>', chart)
        assert bars and [v for _, v in bars] == values
    assert "日付（日）" in charts[0] and "住所地" in charts[1]
    assert re.search(r"<title>長野県(長野市|松本市|上田市|岡谷市|軽井沢町): \d+</title>", charts[1])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_exports_say_their_charset_once(web_app: Flask, client_as: ClientFactory) -> None:
    """The CSV's type is text/csv with one charset; XLSX and PDF their own types."""
    admin = client_as("admin")
    csv = admin.get("/reports/counts/site.csv")
    assert csv.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert admin.get("/reports/counts/site.xlsx").headers["Content-Type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert admin.get("/reports/counts/site.pdf").headers["Content-Type"] == "application/pdf"
    assert admin.get(f"/evidence.csv?date={DAY}").headers["Content-Type"].count("charset") == 1


def test_hub_text_is_from_the_catalogue_in_templates() -> None:
    """No template carries a Japanese or English phrase of its own: every word is t('…')."""
    templates = Path(__file__).parents[1] / "services/fieldkit/hub/web/templates"
    for template in templates.glob("*.html"):
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "", template.read_text(), flags=re.S)
        text = re.sub(r"<code[^>]*>.*?</code>|<[^>]+>", " ", text, flags=re.S)
        leftover = [w for w in text.split() if re.search(r"[A-Za-z\u3040-\u30ff\u4e00-\u9fff]", w)]
        allowed = {"—", "CSV", "XLSX", "PDF", "SHA-256", "→", "←", "|", "·"}
        assert set(leftover) <= allowed, (template.name, leftover)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_staff_day_in_the_browser(
    browser: Any, web_app: Flask, pki: KitPki, staff_day: dict[str, Any]
) -> None:
    """The day above in Chromium: the dashboard's charts, the devices and municipalities pages
    and the evidence page with its red rows; axe-core finds nothing serious or critical on
    any, and the CSP blocks nothing. With FIELDKIT_SCREENSHOTS each page is saved."""
    import os
    import threading

    from werkzeug.serving import make_server

    from tests.hubkit import free_port
    from tests.hubweb import Visitor

    MUNICIPALITY_MACHINES.register(pki, "202011")
    server = make_server("127.0.0.1", free_port(), web_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shots = os.environ.get("FIELDKIT_SCREENSHOTS")
    try:
        admin = Visitor(browser, f"http://127.0.0.1:{server.server_port}", "admin", web_app)
        findings = list(admin.code_page_findings)
        for path, name in (
            ("/", "hub-dashboard"),
            ("/devices", "hub-devices"),
            ("/devices/municipalities", "hub-municipalities"),
            (f"/evidence?date={DAY}", "hub-evidence-red-rows"),
            (f"/reports/worklog/{staff_day['visits'][0]['id']}", "hub-worklog"),
        ):
            assert admin.go(path) == 200, path
            findings += admin.axe_serious()
            if shots:
                admin.page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)
        # The work log of DAY's visit (tab-a): its failed erasure record is the one red row.
        assert staff_day["visits"][0]["date"] == DAY
        assert admin.page.locator("tr.alarm-row").count() == 1
        admin.go(f"/evidence?date={DAY}")
        assert admin.page.locator("tr.alarm-row").count() == 4
        assert findings == []
        assert not [e for e in admin.console_errors if "Content Security Policy" in e]
    finally:
        server.shutdown()
