"""Municipality pick-up of sealed packets (R7, R15, R23, R24).

A municipality user downloads every packet waiting for their codes as one ZIP (one
``<record_id>.json`` per packet, exactly what ``fieldkit packet open`` reads), opens it with
the municipality's key (``fieldkit packet receipt``) and uploads the receipt that makes: the
bundle's SHA-256 and, for each packet, the token sealed inside it, which only decrypting the
packet reveals (issue 17). Only when every token matches the hash the tablet signed into the
packet does the hub delete those ciphertexts, and it writes a ``PacketErasureRow`` per packet
(when, who, the ciphertext's hash, whether decryption was proven: v1 packets, sealed before
the token existed, are confirmed by the bundle hash alone). Packets that arrived after the
download stay until the next pick-up. The hub never opens a packet, and cannot make a receipt.
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
from flask_wtf.file import FileField, FileRequired
from pydantic import ValidationError
from sqlalchemy import delete, func, select

from fieldkit.hub.db import SealedPacketRow
from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.extensions import db
from fieldkit.hub.web.formfields import HubForm
from fieldkit.hub.web.models import PacketErasureRow, PickupRow
from fieldkit.hub.web.text import lazy, t
from fieldkit.sealing import PacketReceipt, receipt_matches

bp = Blueprint("pickup", __name__, url_prefix="/packets")
# ZIP entries get a fixed timestamp so the same packets always make the same bundle hash.
ZIP_TIME = (2020, 1, 1, 0, 0, 0)
# A receipt holds ~100 bytes per packet.
RECEIPT_MAX = 4 * 1024 * 1024


class DownloadForm(HubForm):
    pass


class ConfirmForm(HubForm):
    receipt = FileField(
        lazy("packets.receipt_file"), validators=[FileRequired(message=lazy("form.file_required"))]
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
        abort(400, description=t("error.csrf"))
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
        abort(400, description=t("packets.upload_receipt"))
    if pickup.confirmed_at is not None:
        flash(t("packets.already_confirmed"))
        return redirect(url_for("pickup.index"))
    try:
        receipt = PacketReceipt.model_validate_json(form.receipt.data.read(RECEIPT_MAX + 1))
    except ValidationError:
        flash(t("packets.unreadable"))
        return make_response(index(), 409)
    problem = receipt_problem(pickup, receipt)
    if problem is not None:
        # The user does not hold this bundle, or did not decrypt it: erase nothing.
        flash(t("packets.nothing_erased", problem=problem))
        return make_response(index(), 409)  # the page again, with the reason shown
    erased = erase_packets(pickup, current_user.id)
    flash(t("packets.erased", n=erased))
    return redirect(url_for("pickup.index"))


def receipt_problem(pickup: PickupRow, receipt: PacketReceipt) -> str | None:
    """Why the receipt does not prove the bundle was received and decrypted, or None."""
    if receipt.bundle_sha256 != pickup.sha256:
        return t("packets.hash_mismatch")
    rows = db().execute(
        select(SealedPacketRow.record_id, SealedPacketRow.receipt_commitment).where(
            SealedPacketRow.record_id.in_(pickup.record_ids)
        )
    )
    for record_id, commitment in rows:
        if commitment and not receipt_matches(commitment, receipt.tokens.get(record_id, "")):
            return t("packets.not_decrypted", record=record_id)
    return None


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
                decrypted=bool(row.receipt_commitment),
            )
        )
    session.execute(
        delete(SealedPacketRow).where(SealedPacketRow.record_id.in_([r.record_id for r in rows]))
    )
    pickup.confirmed_at = now
    audit.record(session, username, "packets-erase", f"pickup {pickup.id}", packets=len(rows))
    session.commit()
    return len(rows)
