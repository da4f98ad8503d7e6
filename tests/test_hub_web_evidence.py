"""Incident reports (R25) and erasure evidence per device and day (R24), with exports."""

from __future__ import annotations

import io
import time
from pathlib import Path

import openpyxl
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.db import ErasureRow
from fieldkit.hub.web.app import hubweb
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.models import IncidentRow, WebAuditRow
from fieldkit.pki import KitPki
from tests.hubkit import MUNICIPALITY
from tests.hubweb import ClientFactory, csrf_token, store_packet
from tests.test_hub_web_admin import add_record
from tests.test_hub_web_reports import pdf_text, read_csv


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
    assert missing.status_code == 400 and "Not recorded" in missing.get_data(as_text=True)
    created = admin.post("/incidents", data=form)
    assert created.status_code == 302 and created.headers["Location"].endswith("/incidents/1")
    text = pdf_text(admin.get("/incidents/1.pdf").data, tmp_path)
    for value in ("事故報告", "受付票の紛失", "1枚", "さくら苑 受付", "机上に置いたまま離席"):
        assert value in text
    rows = read_csv(admin.get("/incidents/1.csv").data)
    assert ["どれだけ how much", "1枚"] in rows
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
    import datetime as dt

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
    chiyoda.post(
        "/packets/pickups/1/confirm",
        data={"csrf_token": token, "sha256": bundle.headers["X-Bundle-SHA256"]},
    )
    admin = client_as("admin")
    book = openpyxl.load_workbook(io.BytesIO(admin.get(f"/evidence.xlsx?date={today}").data))
    devices, hub, certificates = (
        [list(r) for r in sheet.iter_rows(min_row=4, values_only=True)] for sheet in book
    )
    assert [(r[0], r[2], r[3]) for r in devices] == [
        ("tab-a", "session", "済 yes"),
        ("tab-b", "daily", "未 NO"),
    ]
    assert [(r[1], r[3]) for r in hub] == [(MUNICIPALITY, "chiyoda")]
    assert {r[0]: r[2] for r in certificates} == {"tab-a": "有効 active", "tab-b": "有効 active"}
    assert admin.get("/evidence?date=2026-01-01").status_code == 200
    empty = read_csv(admin.get("/evidence.csv?date=2026-01-01").data)
    assert "tab-a" not in [row[0] for row in empty if row][:3]
    assert admin.get("/evidence?date=today").status_code == 400
    assert chiyoda.get("/evidence").status_code == 403
