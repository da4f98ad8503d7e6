"""Municipality pick-up (R7, R15, R23, R24): only their packets, downloaded as one bundle the
receiver key opens, then erased on the hub only after the receipt names the bundle's hash."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.db import SealedPacketRow
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import PacketErasureRow, WebAuditRow
from fieldkit.pki import KitPki, read_roster
from fieldkit.sealing import (
    PacketReceipt,
    SealedPacket,
    SealingError,
    bundle_packets,
    open_packet,
    receipt_for_bundle,
)
from tests.hubkit import MUNICIPALITY
from tests.hubweb import (
    OTHER_MUNICIPALITY,
    ClientFactory,
    confirm_pickup,
    csrf_token,
    municipality_receipt,
    store_packet,
)
from tests.support.municipality import MUNICIPALITY_MACHINES

PLAINTEXT = b"application form bytes (synthetic)"


def packets_left(app: Flask) -> set[str]:
    with Session(hubweb(app).engine) as session:
        return set(session.scalars(select(SealedPacketRow.record_id)))


def test_municipality_sees_and_takes_only_its_packets(
    web_app: Flask, pki: KitPki, client_as: ClientFactory, tmp_path: Path
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
    key = MUNICIPALITY_MACHINES.private(MUNICIPALITY)  # on the municipality's own machine
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
    # The municipality makes the receipt on its own machine: `fieldkit packet receipt`.
    bundle_file = tmp_path / "packets-1.zip"
    bundle_file.write_bytes(response.data)
    made = subprocess.run(
        [
            *(sys.executable, "-m", "fieldkit", "packet", "receipt", str(bundle_file)),
            *("--key", str(MUNICIPALITY_MACHINES.key(MUNICIPALITY).private)),
            *("--passphrase-file", str(MUNICIPALITY_MACHINES.passphrase_file())),
            *("--roster", str(pki.roster), "--out", str(tmp_path / "receipt.json")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert "receipt for 3 packets" in made.stdout and "signatures verified" in made.stdout
    receipt = (tmp_path / "receipt.json").read_bytes()
    assert PLAINTEXT not in receipt
    assert confirm_pickup(osaka, 1, receipt).status_code == 403
    # A wrong bundle hash erases nothing.
    wrong = PacketReceipt.model_validate_json(receipt)
    wrong = wrong.model_copy(update={"bundle_sha256": "0" * 64})
    assert confirm_pickup(chiyoda, 1, wrong.model_dump_json().encode()).status_code == 409
    assert set(ours) <= packets_left(web_app)

    done = confirm_pickup(chiyoda, 1, receipt)
    assert done.status_code == 302
    assert packets_left(web_app) == {theirs, late}
    with Session(hubweb(web_app).engine) as session:
        erasures = session.scalars(select(PacketErasureRow)).all()
        assert {e.record_id for e in erasures} == set(ours)
        assert all(e.erased_by == "chiyoda" and e.municipality == MUNICIPALITY for e in erasures)
        assert all(len(e.ciphertext_sha256) == 64 and e.decrypted for e in erasures)
        actions = list(session.scalars(select(WebAuditRow.action)))
    assert "packets-download" in actions and "packets-erase" in actions
    # Confirming twice changes nothing more.
    confirm_pickup(chiyoda, 1, receipt)
    assert packets_left(web_app) == {theirs, late}


def test_a_receipt_without_decryption_erases_nothing(
    web_app: Flask, pki: KitPki, client_as: ClientFactory
) -> None:
    """Issue 17: holding the bundle (its SHA-256) is not enough; the receipt must return the
    token sealed in each packet, which only the municipality's key reveals. Shown both ways:
    the hub's own knowledge (hashes, commitments) or a key of its own makes no receipt that
    erases; the municipality's decryption does."""
    ours = [store_packet(web_app, pki, MUNICIPALITY, PLAINTEXT + bytes([n])) for n in range(2)]
    chiyoda = client_as("chiyoda")
    bundle = chiyoda.post(
        "/packets/download", data={"csrf_token": csrf_token(chiyoda, "/packets")}
    ).data
    digest = hashlib.sha256(bundle).hexdigest()
    packets = bundle_packets(bundle)
    # What the hub (or anyone with the bundle) knows: the bundle's hash and each commitment.
    guessed = {p.record_id: p.receipt_commitment for p in packets}
    for tokens in ({}, guessed, {ours[0]: "00" * 32, ours[1]: "ff" * 32}):
        forged = PacketReceipt(bundle_sha256=digest, tokens=tokens).model_dump_json().encode()
        refused = confirm_pickup(chiyoda, 1, forged)
        assert refused.status_code == 409 and "何も消去していません" in refused.get_data(
            as_text=True
        )
        assert set(ours) <= packets_left(web_app)
    # A key that is not the municipality's opens nothing, so it makes no receipt either.
    with pytest.raises(SealingError):
        receipt_for_bundle(bundle, x25519.X25519PrivateKey.generate())
    # One packet decrypted, the other's token missing: still nothing erased.
    real = PacketReceipt.model_validate_json(municipality_receipt(bundle, MUNICIPALITY))
    half = real.model_copy(update={"tokens": {ours[0]: real.tokens[ours[0]]}})
    assert confirm_pickup(chiyoda, 1, half.model_dump_json().encode()).status_code == 409
    assert set(ours) <= packets_left(web_app)
    # The municipality's receipt erases both.
    assert confirm_pickup(chiyoda, 1, real.model_dump_json().encode()).status_code == 302
    assert packets_left(web_app) == set()
