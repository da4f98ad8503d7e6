"""Municipality pick-up of sealed packets (R7, R15, R23, R24).

A municipality user downloads every packet waiting for their codes as one ZIP (one
``<record_id>.json`` per packet, exactly what ``fieldkit packet open`` reads), then confirms
receipt by giving the bundle's SHA-256. Only then does the hub delete those ciphertexts, and
it writes a ``PacketErasureRow`` per packet (when, who, the ciphertext's hash). Packets that
arrived after the download stay until the next pick-up. The hub never opens a packet.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import delete, func, select
from wtforms import StringField
from wtforms.validators import DataRequired, Regexp

from fieldkit.hub.db import SealedPacketRow
from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.extensions import db
from fieldkit.hub.web.models import PacketErasureRow, PickupRow

bp = Blueprint("pickup", __name__, url_prefix="/packets")
# ZIP entries get a fixed timestamp so the same packets always make the same bundle hash.
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class DownloadForm(FlaskForm):
    pass


class ConfirmForm(FlaskForm):
    sha256 = StringField(
        "SHA-256", validators=[DataRequired(), Regexp(r"^[0-9a-fA-F]{64}$", message="64 hex")]
    )


def _codes() -> tuple[str, ...]:
    """The codes asked for (default: all the user's); another municipality's is a 403."""
    asked = [c for c in request.values.getlist("municipality") if c]
    if any(not current_user.sees(c) for c in asked):
        abort(403)
    return tuple(asked) or tuple(current_user.municipalities)


def bundle(rows: list[SealedPacketRow]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for row in rows:
            info = zipfile.ZipInfo(f"{row.municipality}/{row.record_id}.json", ZIP_TIME)
            archive.writestr(info, row.packet().model_dump_json())
    return out.getvalue()


@bp.get("")
@roles_required("municipality")
def index() -> ResponseReturnValue:
    codes = _codes()
    waiting = (
        db()
        .execute(
            select(SealedPacketRow.municipality, func.count())
            .where(SealedPacketRow.municipality.in_(codes))
            .group_by(SealedPacketRow.municipality)
        )
        .all()
    )
    packets = (
        db()
        .execute(
            select(
                SealedPacketRow.record_id, SealedPacketRow.municipality, SealedPacketRow.device_id
            )
            .where(SealedPacketRow.municipality.in_(codes))
            .order_by(SealedPacketRow.record_id)
            .limit(500)
        )
        .all()
    )
    pickups = db().scalars(select(PickupRow).order_by(PickupRow.id.desc()).limit(50)).all()
    mine = [p for p in pickups if set(p.municipalities) <= set(current_user.municipalities)]
    return render_template(
        "packets.html",
        waiting=waiting,
        packets=packets,
        pickups=mine,
        download=DownloadForm(),
        confirm=ConfirmForm(),
        codes=codes,
    )


@bp.post("/download")
@roles_required("municipality")
def download() -> ResponseReturnValue:
    if not DownloadForm().validate_on_submit():
        abort(400, description="the form has expired; reload the page")
    codes = _codes()
    rows = list(
        db().scalars(
            select(SealedPacketRow)
            .where(SealedPacketRow.municipality.in_(codes))
            .order_by(SealedPacketRow.municipality, SealedPacketRow.record_id)
        )
    )
    data = bundle(rows)
    digest = hashlib.sha256(data).hexdigest()
    pickup = PickupRow(
        username=current_user.id,
        municipalities=list(codes),
        record_ids=[r.record_id for r in rows],
        sha256=digest,
        downloaded_at=time.time(),
        confirmed_at=None,
    )
    db().add(pickup)
    db().flush()
    audit.record(
        db(), current_user.id, "packets-download", f"pickup {pickup.id}", packets=len(rows)
    )
    db().commit()
    response = Response(data, mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="packets-{pickup.id}.zip"'
    response.headers["X-Bundle-SHA256"] = digest
    return response


@bp.post("/pickups/<int:pickup_id>/confirm")
@roles_required("municipality")
def confirm(pickup_id: int) -> ResponseReturnValue:
    pickup = db().get(PickupRow, pickup_id)
    if pickup is None:
        abort(404)
    if any(not current_user.sees(c) for c in pickup.municipalities):
        abort(403)
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400, description="give the bundle's SHA-256 (64 hex digits)")
    if pickup.confirmed_at is not None:
        flash("受領確認済みです / Receipt was confirmed already")
        return redirect(url_for("pickup.index"))
    if (form.sha256.data or "").lower() != pickup.sha256:
        # A wrong hash means the user does not hold this bundle: erase nothing.
        flash("SHA-256 が一致しません。消去しませんでした / SHA-256 does not match: nothing erased")
        return make_response(index(), 409)  # the page again, with the reason shown
    erased = erase_packets(pickup, current_user.id)
    flash(f"受領を確認し、{erased} 件をハブから消去しました / Receipt confirmed, {erased} erased")
    return redirect(url_for("pickup.index"))


def erase_packets(pickup: PickupRow, username: str) -> int:
    """Delete the bundle's ciphertexts and keep a record of each, in one transaction (R24)."""
    session = db()
    now = time.time()
    rows = session.scalars(
        select(SealedPacketRow).where(SealedPacketRow.record_id.in_(pickup.record_ids))
    ).all()
    for row in rows:
        session.add(
            PacketErasureRow(
                record_id=row.record_id,
                municipality=row.municipality,
                device_id=row.device_id,
                pickup_id=pickup.id,
                ciphertext_sha256=hashlib.sha256(row.ciphertext).hexdigest(),
                erased_at=now,
                erased_by=username,
            )
        )
    session.execute(
        delete(SealedPacketRow).where(SealedPacketRow.record_id.in_([r.record_id for r in rows]))
    )
    pickup.confirmed_at = now
    audit.record(session, username, "packets-erase", f"pickup {pickup.id}", packets=len(rows))
    session.commit()
    return len(rows)
