"""Erasure evidence (R24): per day, the devices' own erasure records and the hub's erasures
of picked-up packets, with each device's certificate state; exportable as a 消去記録."""

from __future__ import annotations

import datetime as dt
import re

from flask import Blueprint, abort, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.db import ErasureRow
from fieldkit.hub.web.app import db, hubweb
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import JST, ReportTable
from fieldkit.hub.web.models import PacketErasureRow
from fieldkit.hub.web.reports import respond
from fieldkit.pki import read_roster

bp = Blueprint("evidence", __name__)
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def evidence_tables(session: Session, date: str) -> list[ReportTable]:
    start = dt.datetime.fromisoformat(date).replace(tzinfo=JST)
    lo, hi = start.timestamp(), (start + dt.timedelta(days=1)).timestamp()

    def clock(at: float) -> str:
        return dt.datetime.fromtimestamp(at, JST).strftime("%H:%M:%S")

    devices = ReportTable(
        f"消去記録 Erasure records — {date}",
        [
            "端末 device",
            "時刻 time",
            "レベル level",
            "端末の検証 device verified",
            "署名 signed by the enrolled key",
            "記録ID record",
        ],
        [
            [
                r.device_id,
                clock(r.at),
                r.level,
                "済 yes" if r.verified else "未 NO",
                "確認済 yes" if r.signed else "未確認 NO",
                r.record_id,
            ]
            for r in session.scalars(
                select(ErasureRow)
                .where(ErasureRow.at >= lo, ErasureRow.at < hi)
                .order_by(ErasureRow.device_id, ErasureRow.at)
            )
        ],
    )
    hub = ReportTable(
        "ハブ上の封緘データ消去 Sealed packets erased on the hub after receipt",
        ["時刻 time", "市区町村 municipality", "端末 device", "受領確認者 by", "SHA-256"],
        [
            [clock(r.erased_at), r.municipality, r.device_id, r.erased_by, r.ciphertext_sha256]
            for r in session.scalars(
                select(PacketErasureRow)
                .where(PacketErasureRow.erased_at >= lo, PacketErasureRow.erased_at < hi)
                .order_by(PacketErasureRow.erased_at)
            )
        ],
    )
    roster = read_roster(hubweb().pki.roster)
    certificates = ReportTable(
        "端末証明書 Device certificates",
        ["端末 device", "シリアル serial", "状態 state"],
        [
            [name, f"{entry.serial:x}", "失効 revoked" if entry.revoked else "有効 active"]
            for name, entry in sorted(roster.items())
        ],
    )
    return [devices, hub, certificates]


@bp.get("/evidence")
@bp.get("/evidence.<fmt>")
@roles_required("admin", "auditor")
def day(fmt: str | None = None) -> ResponseReturnValue:
    date = request.args.get("date") or dt.datetime.now(JST).date().isoformat()
    if not DATE.match(date):
        abort(400, description="'date' must be YYYY-MM-DD")
    tables = evidence_tables(db(), date)
    return respond(tables, tables[0].title, f"erasure-evidence-{date}", fmt)
