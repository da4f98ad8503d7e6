"""Municipality pick-up (R7, R15, R23, R24): only their packets, downloaded as one bundle the
receiver key opens, then erased on the hub only after the receipt names the bundle's hash."""

from __future__ import annotations

import hashlib
import io
import zipfile

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.db import SealedPacketRow
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import PacketErasureRow, WebAuditRow
from fieldkit.pki import KitPki, load_x25519_private, read_roster
from fieldkit.sealing import SealedPacket, open_packet
from tests.hubkit import MUNICIPALITY
from tests.hubweb import OTHER_MUNICIPALITY, ClientFactory, csrf_token, store_packet

PLAINTEXT = b"application form bytes (synthetic)"


def packets_left(app: Flask) -> set[str]:
    with Session(hubweb(app).engine) as session:
        return set(session.scalars(select(SealedPacketRow.record_id)))


def test_municipality_sees_and_takes_only_its_packets(
    web_app: Flask, pki: KitPki, client_as: ClientFactory
) -> None:
    ours = [store_packet(web_app, pki, MUNICIPALITY, PLAINTEXT + bytes([n])) for n in range(3)]
    theirs = store_packet(web_app, pki, OTHER_MUNICIPALITY, PLAINTEXT)
    chiyoda, osaka = client_as("chiyoda"), client_as("osaka")

    page = chiyoda.get("/packets").get_data(as_text=True)
    assert all(rid in page for rid in ours) and theirs not in page
    other_page = osaka.get("/packets").get_data(as_text=True)
    assert theirs in other_page and not any(rid in other_page for rid in ours)
    # Asking for another municipality's packets, list or bundle, is a 403.
    assert chiyoda.get(f"/packets?municipality={OTHER_MUNICIPALITY}").status_code == 403
    token = csrf_token(chiyoda, "/packets")
    refused = chiyoda.post(
        "/packets/download", data={"csrf_token": token, "municipality": OTHER_MUNICIPALITY}
    )
    assert refused.status_code == 403
    # Without the CSRF token, no bundle.
    assert chiyoda.post("/packets/download").status_code == 400

    response = chiyoda.post("/packets/download", data={"csrf_token": token})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    digest = hashlib.sha256(response.data).hexdigest()
    assert response.headers["X-Bundle-SHA256"] == digest
    key = load_x25519_private(pki.receiver_dir(MUNICIPALITY) / "private.key")
    roster = read_roster(pki.roster)
    from cryptography.hazmat.primitives.asymmetric import ed25519

    device_key = ed25519.Ed25519PublicKey.from_public_bytes(roster["tab-a"].signing_public)
    opened = set()
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        assert sorted(archive.namelist()) == sorted(f"{MUNICIPALITY}/{r}.json" for r in ours)
        for name in archive.namelist():
            packet = SealedPacket.model_validate_json(archive.read(name))
            opened.add(open_packet(packet, key, device_key))
    assert opened == {PLAINTEXT + bytes([n]) for n in range(3)}

    # A packet that arrives after the download is not in the bundle and must survive.
    late = store_packet(web_app, pki, MUNICIPALITY, PLAINTEXT)
    # The other municipality cannot confirm this pick-up.
    assert (
        osaka.post(
            "/packets/pickups/1/confirm",
            data={"csrf_token": csrf_token(osaka, "/packets"), "sha256": digest},
        ).status_code
        == 403
    )
    # A wrong hash erases nothing.
    wrong = chiyoda.post(
        "/packets/pickups/1/confirm", data={"csrf_token": token, "sha256": "0" * 64}
    )
    assert wrong.status_code == 409
    assert set(ours) <= packets_left(web_app)

    done = chiyoda.post("/packets/pickups/1/confirm", data={"csrf_token": token, "sha256": digest})
    assert done.status_code == 302
    assert packets_left(web_app) == {theirs, late}
    with Session(hubweb(web_app).engine) as session:
        erasures = session.scalars(select(PacketErasureRow)).all()
        assert {e.record_id for e in erasures} == set(ours)
        assert all(e.erased_by == "chiyoda" and e.municipality == MUNICIPALITY for e in erasures)
        assert all(len(e.ciphertext_sha256) == 64 for e in erasures)
        actions = list(session.scalars(select(WebAuditRow.action)))
    assert "packets-download" in actions and "packets-erase" in actions
    # Confirming twice changes nothing more.
    chiyoda.post("/packets/pickups/1/confirm", data={"csrf_token": token, "sha256": digest})
    assert packets_left(web_app) == {theirs, late}
