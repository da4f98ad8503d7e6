"""Device alarms become incident drafts (issue 23 item 7; R25): a virus found, a failed wipe,
an unverified erasure, a gap in a device's erasure-record chain and a revoked device each raise
one draft, once, whoever looks; the admin completes it; the monthly report lists them."""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from pathlib import Path

import openpyxl
import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fieldkit.hub.db import AuditRow, ErasureRow, HealthRow
from fieldkit.hub.web.alarms import raise_and_commit
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import IncidentRow, WebAuditRow
from fieldkit.pki import KitPki, read_roster
from tests.hubweb import ClientFactory, add_record, csrf_token
from tests.support.hub_evidence import chain_at_hub, lose_at_hub


def alarms_at_hub(web_app: Flask, pki: KitPki, tmp_path: Path) -> None:
    """tab-a: a chain with its middle record missing at the hub. tab-b: a health report with
    two antivirus findings, a failed wipe in its audit trail, an erasure record saying the wipe
    was not verified, and then it is revoked."""
    records = chain_at_hub(web_app, pki, tmp_path, 3)
    lose_at_hub(web_app, records[1])
    now = time.time()
    with Session(hubweb(web_app).engine) as session:
        health = add_record(session, "tab-b", "health", now)
        session.add(
            HealthRow(
                record_id=health,
                device_id="tab-b",
                at=now,
                report={"antivirus": {"findings": 2, "gate_allowed": False}},
            )
        )
        failed = add_record(session, "tab-b", "audit", now)
        session.add(
            AuditRow(
                record_id=failed,
                device_id="tab-b",
                at=now,
                actor="op-lead",
                action="wipe-failed",
                outcome="refused",
                detail={},
            )
        )
        unverified = add_record(session, "tab-b", "erasure", now)
        session.add(
            ErasureRow(
                record_id=unverified,
                device_id="tab-b",
                at=now,
                level="session",
                verified=False,
                signed=True,
                record={},
            )
        )
        session.commit()
    pki.revoke("tab-b")


def test_alarms_raise_one_draft_each_for_the_admin_to_complete(
    web_app: Flask, pki: KitPki, client_as: ClientFactory, tmp_path: Path
) -> None:
    alarms_at_hub(web_app, pki, tmp_path)
    auditor = client_as("auditor")
    page = auditor.get("/incidents").get_data(as_text=True)
    phrases = (
        "ウイルス検出: 端末 tab-b のウイルス対策が、感染したファイルを2件見つけました",
        "消去失敗: 端末 tab-b で、受付の後のデータ消去に失敗しました",
        "消去未検証: 端末 tab-b の消去記録（申請ごと）は、消去を確認できなかったと",
        "消去記録の欠落: 端末 tab-a の消去記録のつながりが切れています",
        "端末の失効: 端末 tab-b は失効しました",
    )
    for phrase in phrases:
        assert phrase.split(" の")[0].split(" で")[0].split(" は")[0] in page, phrase
    assert page.count("完成させる") == 5
    auditor.get("/incidents")  # looked at again: nothing raised twice
    with Session(hubweb(web_app).engine) as session:
        drafts = session.scalars(select(IncidentRow).order_by(IncidentRow.id)).all()
        assert [d.status for d in drafts] == ["draft"] * 5
        # Written from the hub's catalogue in Japanese, the report's language: no English.
        for phrase in phrases:
            assert any(d.what.startswith(phrase) for d in drafts), phrase
        for draft in drafts:
            words = re.sub(r"tab-[ab]|シリアル [0-9a-f]+", "", draft.what + draft.location)
            assert not re.search(r"[A-Za-z]{2,}", words), draft.what
            assert draft.location in ("端末 tab-a", "端末 tab-b")
        assert len({d.source for d in drafts}) == 5
        raised = session.scalars(
            select(WebAuditRow).where(WebAuditRow.action == "incident-draft")
        ).all()
        assert {r.actor for r in raised} == {"hub"} and len(raised) == 5
        virus = next(d.id for d in drafts if d.source.startswith("virus:"))

    admin = client_as("admin")
    form_page = admin.get(f"/incidents/{virus}/complete").get_data(as_text=True)
    assert "端末の警報からハブが作成しました" in form_page
    token = csrf_token(admin, f"/incidents/{virus}/complete")
    today = dt.datetime.now(JST).date().isoformat()
    what = re.search(r"<textarea[^>]*name=\"what\"[^>]*>\s*([^<]*)<", form_page)
    assert what and what[1].startswith("ウイルス検出")  # the draft's text, prefilled
    filled = {
        "occurred_on": today,
        "what": what[1],
        "how_much": "",
        "location": "端末 tab-b",
        "how": "定義更新後の定期スキャンで検出、受付を停止",
        "response": "端末を隔離し、再イメージ化",
        "csrf_token": token,
    }
    refused = admin.post(f"/incidents/{virus}/complete", data=filled)
    assert refused.status_code == 400
    assert "どれだけ（件数・範囲）: 入力してください" in refused.get_data(as_text=True)
    done = admin.post(f"/incidents/{virus}/complete", data={**filled, "how_much": "2ファイル"})
    assert done.status_code == 302
    report = admin.get(f"/incidents/{virus}.csv").get_data(as_text=True)
    assert "報告済" in report and "2ファイル" in report
    assert admin.get(f"/incidents/{virus}/complete").status_code == 404  # no longer a draft

    month = today[:7]
    book = openpyxl.load_workbook(io.BytesIO(admin.get(f"/reports/monthly/{month}.xlsx").data))
    incidents = book.worksheets[-1]
    assert incidents["A1"].value == "事故等"
    statuses = [r[2] for r in incidents.iter_rows(min_row=4, values_only=True)]
    assert sorted(statuses) == ["下書き"] * 4 + ["報告済"]

    # The audit log says what each entry is about in the reader's words, beside what it stores.
    audit = admin.get("/audit").get_data(as_text=True)
    assert f"事故報告 第{virus}号 <code>incident {virus}</code>" in audit
    english = admin.get("/audit?lang=en").get_data(as_text=True)
    assert f"incident report No. {virus} <code>incident {virus}</code>" in english
    admin.get("/audit?lang=ja")


def test_a_month_without_alarms_says_so(client_as: ClientFactory) -> None:
    """The incident section of a quiet month says there was nothing, rather than being empty."""
    admin = client_as("admin")
    book = openpyxl.load_workbook(io.BytesIO(admin.get("/reports/monthly/2026-08.xlsx").data))
    rows = list(book.worksheets[-1].iter_rows(min_row=4, values_only=True))
    assert rows == [("—", None, None, "なし（警報もなし）")]


def test_the_database_holds_each_alarm_to_one_draft(
    web_app: Flask, pki: KitPki, tmp_path: Path
) -> None:
    """Two workers showing /incidents at once could both decide a draft is missing: the unique
    ``incident.source`` lets only one insert stand, and the other worker's attempt is dropped."""
    alarms_at_hub(web_app, pki, tmp_path)
    roster = read_roster(pki.roster)
    engine = hubweb(web_app).engine
    with Session(engine) as first:
        raise_and_commit(first, roster)
    with Session(engine) as second:
        drafts = second.scalars(select(IncidentRow)).all()
        assert len(drafts) == 5
        twin = IncidentRow(
            reported_at=time.time(),
            reported_by="hub",
            occurred_on=drafts[0].occurred_on,
            what="",
            how_much="",
            location="",
            how="",
            response="",
            status="draft",
            source=drafts[0].source,
        )
        second.add(twin)
        with pytest.raises(IntegrityError):
            second.commit()
        second.rollback()
        raise_and_commit(second, roster)  # nothing missing: nothing raised
        assert len(second.scalars(select(IncidentRow)).all()) == 5
