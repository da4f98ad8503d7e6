"""Incident reports (R25) and erasure evidence per device and day (R24), with exports."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.cli import main
from fieldkit.hub.db import ErasureRow
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import CertificateRow, IncidentRow, WebAuditRow
from fieldkit.pki import KitPki, load_ed25519_private
from fieldkit.wipe.record import ErasureRecord, EvidenceStore
from tests.conftest import write_config
from tests.hubkit import MUNICIPALITY, enrol_tablet, tablet_dir
from tests.hubweb import (
    ClientFactory,
    add_record,
    confirm_pickup,
    csrf_token,
    municipality_label,
    municipality_receipt,
    pdf_text,
    read_csv,
    store_packet,
)
from tests.support.hub_evidence import (
    certificate_of,
    chain_at_hub,
    keep_at_hub,
    lose_at_hub,
    upload,
)


def test_incident_recorded_and_exported(
    web_app: Flask, client_as: ClientFactory, tmp_path: Path
) -> None:
    """R25: what, how much, where and how; the export carries them; the audit names only the
    incident number."""
    admin = client_as("admin")
    token = csrf_token(admin, "/incidents")
    form = {
        "occurred_on": "2026-08-04",
        "what": "受付票の紛失",
        "how_much": "1枚",
        "location": "さくら苑 受付",
        "how": "机上に置いたまま離席",
        "response": "市へ報告",
        "csrf_token": token,
    }
    missing = admin.post("/incidents", data={**form, "how": ""})
    assert missing.status_code == 400 and "記録できません" in missing.get_data(as_text=True)
    created = admin.post("/incidents", data=form)
    assert created.status_code == 302 and created.headers["Location"].endswith("/incidents/1")
    text = pdf_text(admin.get("/incidents/1.pdf").data, tmp_path)
    for value in ("事故報告", "受付票の紛失", "1枚", "さくら苑 受付", "机上に置いたまま離席"):
        assert value in text
    rows = read_csv(admin.get("/incidents/1.csv").data)
    assert ["どれだけ", "1枚"] in rows
    with Session(hubweb(web_app).engine) as session:
        assert session.get(IncidentRow, 1) is not None
        entry = session.scalars(
            select(WebAuditRow).where(WebAuditRow.action == "incident-report")
        ).one()
    assert entry.target == "incident 1" and "紛失" not in str(entry.detail)
    auditor = client_as("auditor")
    assert auditor.get("/incidents/1").status_code == 200
    own = {**form, "csrf_token": csrf_token(auditor, "/incidents")}
    assert auditor.post("/incidents", data=own).status_code == 403
    assert client_as("chiyoda").get("/incidents/1").status_code == 403


def test_erasure_evidence_per_day(web_app: Flask, pki: KitPki, client_as: ClientFactory) -> None:
    """R24: the day's device erasure records, the hub's packet erasures, certificates."""
    today = dt.datetime.now(JST).date().isoformat()
    with Session(hubweb(web_app).engine) as session:
        for device, level, verified in (("tab-a", "session", True), ("tab-b", "daily", False)):
            rid = add_record(session, device, "erasure", time.time())
            session.add(
                ErasureRow(
                    record_id=rid,
                    device_id=device,
                    at=time.time(),
                    level=level,
                    verified=verified,
                    record={},
                )
            )
        session.commit()
    store_packet(web_app, pki, MUNICIPALITY, b"synthetic")
    chiyoda = client_as("chiyoda")
    token = csrf_token(chiyoda, "/packets")
    bundle = chiyoda.post("/packets/download", data={"csrf_token": token})
    confirm_pickup(chiyoda, 1, municipality_receipt(bundle.data, MUNICIPALITY))
    admin = client_as("admin")
    book = openpyxl.load_workbook(io.BytesIO(admin.get(f"/evidence.xlsx?date={today}").data))
    devices, chains, sanitizations, hub, certificates = [
        [list(r) for r in sheet.iter_rows(min_row=4, values_only=True)] for sheet in book
    ][2:]
    assert sanitizations == []
    assert [row[0] for row in chains] == ["tab-a", "tab-b"]
    assert [(r[0], r[2], r[3]) for r in devices] == [
        ("tab-a", "申請ごと", "確認済"),
        ("tab-b", "日次", "未確認"),
    ]
    assert [(r[1], r[3]) for r in hub] == [(municipality_label(MUNICIPALITY), "chiyoda")]
    assert {r[0]: r[2] for r in certificates} == {"tab-a": "有効", "tab-b": "有効"}
    assert admin.get("/evidence?date=2026-01-01").status_code == 200
    empty = read_csv(admin.get("/evidence.csv?date=2026-01-01").data)
    assert "tab-a" not in [row[0] for row in empty if row][:3]
    assert admin.get("/evidence?date=today").status_code == 400
    assert chiyoda.get("/evidence").status_code == 403


# ---- contract-end sanitization certificates at the hub --------------------------------------


def evidence_sheets(client: FlaskClient, query: str) -> list[list[list[Any]]]:
    book = openpyxl.load_workbook(io.BytesIO(client.get(f"/evidence.xlsx?{query}").data))
    # The two sheets before these (sessions per device and day, sessions to check) are
    # test_hub_web_staff's.
    sheets = [[list(r) for r in sheet.iter_rows(min_row=4, values_only=True)] for sheet in book]
    return sheets[2:]


def test_a_certificate_that_closes_the_chain_is_verified_and_kept_once(
    web_app: Flask,
    pki: KitPki,
    client_as: ClientFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = chain_at_hub(web_app, pki, tmp_path, 3)
    text = certificate_of(pki, "tab-a", 3, records[-1].hash).model_dump_json()
    admin = client_as("admin")
    token = csrf_token(admin, "/evidence")
    created = upload(admin, text, token)
    assert created.status_code == 302, created.get_data(as_text=True)
    today = dt.datetime.now(JST).date().isoformat()
    assert created.headers["Location"].endswith(f"/evidence?date={today}&device=tab-a")
    page = admin.get(f"/evidence?date={today}&device=tab-a").get_data(as_text=True)
    assert "を登録しました（確認済）" in page
    devices, chains, sanitizations, _, _ = evidence_sheets(admin, f"date={today}&device=tab-a")
    assert len(devices) == 3
    assert chains == [["tab-a", "3", records[-1].hash[:12], "連続"]]
    ((row),) = sanitizations
    assert row[0] == "tab-a" and row[2:5] == ["合格", "確認済", "確認済"]
    certificate_id = row[-1]
    # Kept as uploaded, and once.
    auditor = client_as("auditor")
    assert auditor.get(f"/evidence/certificates/{certificate_id}.json").data == text.encode()
    assert upload(admin, text, token).status_code == 409
    with Session(hubweb(web_app).engine) as session:
        assert len(session.scalars(select(CertificateRow)).all()) == 1
        entry = session.scalars(
            select(WebAuditRow).where(WebAuditRow.action == "sanitization-certificate")
        ).one()
    assert entry.target == f"certificate {certificate_id}" and entry.detail["chain"] is True
    # The auditor repeats the check offline with the hub's export of the records.
    (tmp_path / "cert.json").write_text(text)
    export = auditor.get("/evidence/records/tab-a.jsonl").data
    (tmp_path / "records.jsonl").write_bytes(export)
    assert len(export.splitlines()) == 3
    config = write_config(tmp_path)
    verify = ["--config", str(config), "certificate", "verify", str(tmp_path / "cert.json")]
    assert main([*verify, "--records", str(tmp_path / "records.jsonl")]) == 0
    assert "signature and erasure-record chain valid" in capsys.readouterr().out


def test_the_hub_shows_a_certificate_it_cannot_verify_and_refuses_what_is_not_one(
    web_app: Flask, pki: KitPki, client_as: ClientFactory, tmp_path: Path
) -> None:
    records = chain_at_hub(web_app, pki, tmp_path, 3)
    admin = client_as("admin")
    token = csrf_token(admin, "/evidence")
    # Claims the chain ended one record earlier than the records the hub holds.
    short = certificate_of(pki, "tab-a", 2, records[1].hash).model_dump_json()
    assert upload(admin, short, token).status_code == 302
    # Edited after signing: the result no longer matches the signature.
    edited = certificate_of(pki, "tab-a", 3, records[-1].hash).model_dump_json()
    edited = edited.replace('"samples_failed":0', '"samples_failed":1')
    assert upload(admin, edited, token).status_code == 302
    today = dt.datetime.now(JST).date().isoformat()
    _, _, sanitizations, _, _ = evidence_sheets(admin, f"date={today}")
    checks = sorted((r[3], r[4], r[5]) for r in sanitizations)
    assert checks[0][:2] == ("未確認", "確認済")  # edited: chain fine, signature not
    assert checks[1][:2] == ("確認済", "未確認")
    assert "消去記録は3件" in checks[1][2] and "証明書は2件" in checks[1][2]

    # The genuine certificate behind the edited copy takes its place; nothing replaces it.
    genuine_text = certificate_of(pki, "tab-a", 3, records[-1].hash).model_dump_json()
    edited_first = genuine_text.replace('"samples_failed":0', '"samples_failed":1')
    assert upload(admin, edited_first, token).status_code == 302
    assert upload(admin, genuine_text, token).status_code == 302
    assert upload(admin, edited_first, token).status_code == 409
    genuine_id = json.loads(genuine_text)["certificate_id"]
    assert admin.get(f"/evidence/certificates/{genuine_id}.json").data == genuine_text.encode()

    for bad, reason in (
        (b"\xff\xfe not text", "UTF-8 のテキストではありません"),
        ("{}", "データ消去証明書ではありません"),
        (
            certificate_of(pki, "tab-z", 0, "0" * 64).model_dump_json(),
            "端末 tab-z はこのハブに登録されていません",
        ),
    ):
        refused = upload(admin, bad, token)
        assert refused.status_code == 400 and reason in refused.get_data(as_text=True), reason
    assert upload(admin, short).status_code == 400  # no CSRF token
    auditor = client_as("auditor")
    assert upload(auditor, short, csrf_token(auditor, "/evidence")).status_code == 403
    chiyoda = client_as("chiyoda")
    assert chiyoda.get("/evidence/records/tab-a.jsonl").status_code == 403
    assert chiyoda.get(f"/evidence/certificates/{genuine_id}.json").status_code == 403
    assert upload(chiyoda, short, csrf_token(chiyoda, "/")).status_code == 403
    with Session(hubweb(web_app).engine) as session:
        assert len(session.scalars(select(CertificateRow)).all()) == 3


def test_a_record_missing_at_the_hub_shows_as_a_gap_until_it_arrives(
    web_app: Flask, pki: KitPki, client_as: ClientFactory, tmp_path: Path
) -> None:
    records = chain_at_hub(web_app, pki, tmp_path, 3)
    lose_at_hub(web_app, records[1])
    admin = client_as("admin")
    text = certificate_of(pki, "tab-a", 3, records[-1].hash).model_dump_json()
    assert upload(admin, text, csrf_token(admin, "/evidence")).status_code == 302
    today = dt.datetime.now(JST).date().isoformat()
    _, chains, sanitizations, _, _ = evidence_sheets(admin, f"date={today}")
    ((device, length, head, state),) = chains
    assert (device, length, head) == ("tab-a", "1", records[0].hash[:12])
    assert "2件中1件の記録に、最初の記録からたどり着けません" in state
    assert (
        sanitizations[0][4] == "未確認" and "最初の記録からたどり着けません" in sanitizations[0][5]
    )
    keep_at_hub(web_app, [records[1]])  # sync delivers it late
    _, chains, sanitizations, _, _ = evidence_sheets(admin, f"date={today}")
    assert chains[0][1:] == ["3", records[-1].hash[:12], "連続"]
    assert sanitizations[0][4] == "確認済"
    with Session(hubweb(web_app).engine) as session:
        assert session.scalars(select(CertificateRow)).one().chain_ok is False  # at upload


def test_a_re_enrolled_device_keeps_one_chain_across_its_two_keys(
    web_app: Flask, pki: KitPki, client_as: ClientFactory, tmp_path: Path
) -> None:
    """Re-enrolment gives the tablet a new signing key; the hub keeps the earlier one in its
    roster, so the records signed before and after form one intact chain."""
    store = EvidenceStore(tmp_path / "evidence.sqlite")

    def seal(key_file: Path) -> ErasureRecord:
        now = time.time()
        record = ErasureRecord(kind="daily", device="tab-a", started=now - 1, finished=now, ok=True)
        return store.append(record, load_ed25519_private(key_file))

    before = [seal(tablet_dir(pki, "tab-a") / "signing.key") for _ in range(2)]
    pki.revoke("tab-a")
    enrol_tablet(pki, "tab-a")
    after = seal(tablet_dir(pki, "tab-a") / "signing.key")
    store.close()
    keep_at_hub(web_app, [*before, after])
    today = dt.datetime.now(JST).date().isoformat()
    _, chains, _, _, certificates = evidence_sheets(client_as("auditor"), f"date={today}")
    assert chains == [["tab-a", "3", after.hash[:12], "連続"]]
    (tab_a,) = [row for row in certificates if row[0] == "tab-a"]
    assert tab_a[3] == after.signer  # the key an auditor pins with --public-key
