"""Hub web admin pages: devices (enrol, health, revoke), the handler registry with its audit
chain (R13, R22), sites and visits (R19, R20), and `fieldkit hub web` under gunicorn."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fieldkit.enrolment.local import enrol_locally
from fieldkit.hub.db import AuditRow, DeviceStatusRow, ErasureRow, HealthRow
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import EnrolmentCodeRow, OperatorRow, VisitRow, WebAuditRow
from fieldkit.pki import KitPki, read_roster
from tests.hubkit import MUNICIPALITY, free_port, wait_for
from tests.hubweb import PASSWORD, ClientFactory, add_record, csrf_token, start_hub_web


def test_devices_health_enrol_and_revoke(
    web_app: Flask, pki: KitPki, client_as: ClientFactory, tmp_path: Path
) -> None:
    now = time.time()
    with Session(hubweb(web_app).engine) as session:
        rid = add_record(session, "tab-a", "health", now - 60)
        session.add(
            HealthRow(
                record_id=rid,
                device_id="tab-a",
                at=now - 60,
                report={
                    "antivirus": {
                        "definitions_age_hours": 30,
                        "findings": 2,
                        "gate_allowed": False,
                    },
                },
            )
        )
        # What sync's last roster request said (hub ingest keeps the latest per device).
        session.add(
            DeviceStatusRow(
                device_id="tab-a",
                reported_at=now - 20,
                received_at=now - 20,
                version="0.1.0",
                outbox_pending=17,
                outbox_refused=0,
                outbox_oldest_at=now - 3 * 3600 - 20,
            )
        )
        rid = add_record(session, "tab-a", "erasure", now - 30)
        session.add(
            ErasureRow(
                record_id=rid,
                device_id="tab-a",
                at=now - 30,
                level="daily",
                verified=True,
                record={},
            )
        )
        # The kiosk failed closed twice today (a wipe not proven, then a refused start), and
        # once two days ago: the alarms column counts the last 24 hours.
        for action, ago in (
            ("wipe-failed", 300),
            ("session-refused:wipe-unproven", 200),
            ("login", 100),
            ("session-refused:antivirus", 2 * 86400),
        ):
            rid = add_record(session, "tab-a", "audit", now - ago)
            session.add(
                AuditRow(
                    record_id=rid,
                    device_id="tab-a",
                    at=now - ago,
                    actor="op-01",
                    action=action,
                    outcome="",
                    detail={},
                )
            )
        session.commit()
    admin = client_as("admin")
    page = admin.get("/devices").get_data(as_text=True)
    row = page[page.index("<td>tab-a</td>") :].split("</tr>")[0]
    for shown in (
        "2件: 受付を拒否",
        "30時間",
        "2件検出・受付停止中",
        "17件（最も古いもの 3時間前）",
        "0.1.0",
        "日次 消去を確認",
        "有効",
    ):
        assert shown in row, shown

    token = csrf_token(admin, "/devices")
    made = admin.post(
        "/devices/enrol", data={"device_id": "tab-c", "site": "松本会場", "csrf_token": token}
    )
    assert made.status_code == 200
    code = re.search(r"<strong>([0-9A-Z-]{24})</strong>", made.get_data(as_text=True))
    assert code is not None
    # The hub keeps the code's hash only, and no page offers a device's keys (issue 17).
    with Session(hubweb(web_app).engine) as session:
        row = session.scalars(select(EnrolmentCodeRow)).one()
    assert row.device_id == "tab-c" and row.site == "松本会場"
    assert code.group(1).replace("-", "")[4:] not in row.secret_hash
    assert row.secret_hash.startswith("$argon2id$")
    assert admin.post("/devices/tab-c/bundle", data={"csrf_token": token}).status_code == 404
    # The tablet enrols with its own keys (here through the same issuing code, locally).
    enrol_locally(pki, "tab-c", tmp_path / "tablet-c")
    assert not read_roster(pki.roster)["tab-c"].revoked
    assert not list(pki.root.rglob("signing.key")) and not list(pki.root.rglob("client.key"))
    # A bad id is refused with the reason, and no code is made.
    bad = admin.post(
        "/devices/enrol", data={"device_id": "Bad Id", "csrf_token": token}, follow_redirects=True
    )
    assert "コードを作れません: 端末IDが正しくありません" in bad.get_data(as_text=True)

    serial = read_roster(pki.roster)["tab-c"].serial
    assert admin.post("/devices/tab-c/revoke", data={"csrf_token": token}).status_code == 302
    assert read_roster(pki.roster)["tab-c"].revoked
    assert serial in pki.revoked_serials()
    assert "<td>tab-c</td><td>失効</td>" in admin.get("/devices").get_data(as_text=True)
    with Session(hubweb(web_app).engine) as session:
        actions = list(session.scalars(select(WebAuditRow.action)))
    assert {"enrol-code-created", "device-revoke"} <= set(actions)
    assert "device-bundle-download" not in actions


def test_handler_registry_changes_are_recorded_and_chained(
    web_app: Flask, client_as: ClientFactory
) -> None:
    """R13, R22: create, reset, disable; every change in the audit chain; tampering shows."""
    admin = client_as("admin")
    token = csrf_token(admin, "/operators")

    def create(operator_id: str, duty: str) -> int:
        return admin.post(
            "/operators",
            data={
                "operator_id": operator_id,
                "name": "担当者",
                "duty": duty,
                "password": PASSWORD,
                "csrf_token": token,
            },
        ).status_code

    assert create("sekinin", "responsible") == 302
    assert create("jugyo-1", "handler") == 302
    # One responsible person at a time.
    create("sekinin-2", "responsible")
    assert create("x", "handler") == 400  # id too short
    admin.post(
        "/operators/jugyo-1/password", data={"password": "a new long password", "csrf_token": token}
    )
    assert (
        admin.post(
            "/operators/jugyo-1/password", data={"password": "short", "csrf_token": token}
        ).status_code
        == 400
    )
    admin.post("/operators/jugyo-1/toggle", data={"csrf_token": token})
    with Session(hubweb(web_app).engine) as session:
        assert session.get(OperatorRow, "sekinin-2") is None
        operator = session.get(OperatorRow, "jugyo-1")
        assert operator is not None and operator.disabled
        assert operator.password_hash.startswith("$argon2id$")
        actions = [
            (a.action, a.target)
            for a in session.scalars(
                select(WebAuditRow)
                .where(WebAuditRow.action.like("operator-%"))
                .order_by(WebAuditRow.id)
            )
        ]
    assert actions == [
        ("operator-create", "sekinin"),
        ("operator-create", "jugyo-1"),
        ("operator-password-reset", "jugyo-1"),
        ("operator-disable", "jugyo-1"),
    ]
    assert "ハッシュチェーン正常" in admin.get("/audit").get_data(as_text=True)
    # Rewriting history (who created the operator) breaks the chain, and the page says where.
    with Session(hubweb(web_app).engine) as session:
        session.execute(
            update(WebAuditRow).where(WebAuditRow.target == "sekinin").values(actor="someone-else")
        )
        session.commit()
    page = client_as("auditor").get("/audit").get_data(as_text=True)
    assert "ハッシュチェーン不一致" in page


def test_visits_need_two_registered_staff(web_app: Flask, client_as: ClientFactory) -> None:
    """R19: two or more staff with a lead, all in the registry; progress toward 40 days."""
    admin = client_as("admin")
    token = csrf_token(admin, "/sites")
    admin.post(
        "/sites/facilities",
        data={
            "name": "さくら苑",
            "kind": "welfare",
            "municipality": MUNICIPALITY,
            "csrf_token": token,
        },
    )
    assert (
        admin.post(
            "/sites/facilities",
            data={"name": "x", "kind": "castle", "municipality": "1", "csrf_token": token},
        ).status_code
        == 400
    )
    admin.post(
        "/sites/requests",
        data={
            "facility_id": "1",
            "wanted_date": "2026-08-10",
            "expected_people": "12",
            "csrf_token": token,
        },
    )
    for operator in ("lead-1", "staff-1"):
        admin.post(
            "/operators",
            data={
                "operator_id": operator,
                "name": "担当",
                "duty": "handler",
                "password": PASSWORD,
                "csrf_token": token,
            },
        )
    visit = {
        "facility_id": "1",
        "date": "2026-08-10",
        "kind": "application-support",
        "device_id": "tab-a",
        "lead": "lead-1",
        "staff": "",
        "start_time": "09:00",
        "end_time": "15:00",
        "csrf_token": token,
    }
    alone = admin.post("/sites/visits", data={**visit, "staff": "lead-1"}, follow_redirects=True)
    assert alone.status_code == 400 and "従事者は二人以上必要です" in alone.get_data(as_text=True)
    stranger = admin.post("/sites/visits", data={**visit, "staff": "nobody"}, follow_redirects=True)
    assert "名簿にない職員ID: nobody" in stranger.get_data(as_text=True)
    backwards = admin.post("/sites/visits", data={**visit, "staff": "staff-1", "end_time": "08:00"})
    assert backwards.status_code == 400
    assert admin.post("/sites/visits", data={**visit, "staff": "staff-1"}).status_code == 302
    admin.post(
        "/sites/visits",
        data={**visit, "staff": "staff-1", "kind": "card-issuance-support", "date": "2026-09-01"},
    )
    with Session(hubweb(web_app).engine) as session:
        visits = session.scalars(select(VisitRow).order_by(VisitRow.id)).all()
    assert [(v.date, v.kind, v.staff) for v in visits] == [
        ("2026-08-10", "application-support", ["lead-1", "staff-1"]),
        ("2026-09-01", "card-issuance-support", ["lead-1", "staff-1"]),
    ]
    page = admin.get("/sites").get_data(as_text=True)
    assert "1 / 40" in page and "訪問予定あり" in page


def test_fieldkit_hub_web_serves_under_gunicorn(
    tmp_path: Path, pki: KitPki, sqlite_url: str
) -> None:
    """`fieldkit hub web` runs gunicorn on the configured loopback port; headers come through."""
    port = free_port()
    process = start_hub_web(tmp_path, pki, sqlite_url, port, ("root",), "workers = 1")
    try:

        def page() -> object:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2)
            except OSError:
                return None

        response = wait_for(page, 30, "gunicorn to serve /login")
        assert response.status == 200  # type: ignore[attr-defined]
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]  # type: ignore[attr-defined]
        assert "ログイン" in response.read().decode()  # type: ignore[attr-defined]
    finally:
        process.terminate()
        process.wait(20)
    assert (tmp_path / "web.key").stat().st_mode & 0o777 == 0o600


def test_calendar_shows_visits_and_requests(web_app: Flask, client_as: ClientFactory) -> None:
    """R19: the month's visits and open visit requests on a Monday-first calendar."""
    admin = client_as("admin")
    token = csrf_token(admin, "/sites")
    admin.post(
        "/sites/facilities",
        data={
            "name": "さくら苑",
            "kind": "welfare",
            "municipality": MUNICIPALITY,
            "csrf_token": token,
        },
    )
    admin.post(
        "/sites/requests",
        data={"facility_id": "1", "wanted_date": "2026-08-20", "csrf_token": token},
    )
    with Session(hubweb(web_app).engine) as session:
        session.add(
            VisitRow(
                facility_id=1,
                date="2026-08-03",
                kind="card-issuance-support",
                device_id="tab-a",
                lead="a",
                staff=["a", "b"],
                start_time="09:00",
                end_time="12:00",
                incidents="",
            )
        )
        session.commit()
    page = admin.get("/sites/calendar?month=2026-08").get_data(as_text=True)
    assert "さくら苑（交付支援）" in page and "訪問依頼: さくら苑" in page
    # 2026-08-01 is a Saturday: the first week starts on Monday 27 July.
    first_row = page[page.index("<tbody>") :].split("</tr>")[0]
    assert first_row.count("other-month") == 5
    assert "2026-07" in page and "2026-09" in page
    assert admin.get("/sites/calendar?month=2026-8").status_code == 400
    assert client_as("chiyoda").get("/sites/calendar").status_code == 403
