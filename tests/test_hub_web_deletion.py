"""The deletion-evidence document (issue 23 item 6; R21, R24): one signed PDF per period with
every device's erasure records and chain, the sanitization certificates, the hub's packet
erasures and the paper destroyed (with staff and witness); checked offline with
``fieldkit evidence verify``, which fails on an edited copy, on another key, and on a signer
the kit CA did not certify for signing documents."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from fieldkit import signed_pdf
from fieldkit.cli import main
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import PacketErasureRow, PickupRow
from fieldkit.pki import KitPki
from tests.hubweb import ClientFactory, add_record, csrf_token, pdf_text, register_operator
from tests.support.hub_evidence import certificate_of, chain_at_hub, upload


def today() -> str:
    """Today in Japan, when asked: a module-level date taken at collection went stale when the
    run crossed midnight JST (15:00 UTC), and the records made later fell outside it."""
    return dt.datetime.now(JST).date().isoformat()


def paper(client: FlaskClient, **fields: str) -> tuple[int, str]:
    data = {
        "destroyed_on": today(),
        "what": "申請控え（職員用）",
        "quantity": "120枚",
        "method": "shredder",
        "staff": "op-lead",
        "witness": "立会 次郎",
        "csrf_token": csrf_token(client, "/deletion"),
        **fields,
    }
    response = client.post("/deletion/paper", data=data)
    return response.status_code, response.get_data(as_text=True)


def packets_erased(web_app: Flask, municipality: str, n: int) -> None:
    now = time.time()
    with Session(hubweb(web_app).engine) as session:
        pickup = PickupRow(
            username="chiyoda",
            municipalities=[municipality],
            record_ids=[],
            sha256="0" * 64,
            downloaded_at=now,
            confirmed_at=now,
        )
        session.add(pickup)
        session.flush()
        for _ in range(n):
            session.add(
                PacketErasureRow(
                    record_id=add_record(session, "tab-a", "packet", now),
                    municipality=municipality,
                    device_id="tab-a",
                    pickup_id=pickup.id,
                    ciphertext_sha256="1" * 64,
                    erased_at=now,
                    erased_by="chiyoda",
                )
            )
        session.commit()


def test_the_signed_deletion_document_lists_everything_and_verifies_offline(
    web_app: Flask,
    pki: KitPki,
    client_as: ClientFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    TODAY = today()
    records = chain_at_hub(web_app, pki, tmp_path, 3)
    admin = client_as("admin")
    certificate = certificate_of(pki, "tab-a", 3, records[-1].hash).model_dump_json()
    assert upload(admin, certificate, csrf_token(admin, "/evidence")).status_code == 302
    packets_erased(web_app, "202011", 4)
    assert register_operator(admin, "op-lead", "現場 一郎").status_code == 302
    for fields, message in (
        ({"staff": "nobody"}, "実施者は名簿に登録済みの職員IDで"),
        ({"witness": "op-lead"}, "立会人は実施者と別の人"),
        ({"witness": ""}, "立会人: 入力してください"),
        ({"destroyed_on": "昨日"}, "日付は YYYY-MM-DD で入力してください"),
    ):
        status, page = paper(admin, **fields)
        assert status == 400 and "記録できません" in page and message in page
    assert paper(admin)[0] == 302

    page = admin.get("/deletion").get_data(as_text=True)
    key = re.search(r'id="evidence-key">([0-9a-f]{64})<', page)
    assert key, "the page shows the hub's evidence key"
    assert stat.S_IMODE(pki.evidence_key.stat().st_mode) == 0o600
    token = csrf_token(admin, "/deletion")
    refused = admin.post(
        "/deletion/documents",
        data={"date_from": TODAY, "date_to": "2000-01-01", "csrf_token": token},
    )
    assert refused.status_code == 400 and "終了は開始以後" in refused.get_data(as_text=True)
    made = admin.post(
        "/deletion/documents", data={"date_from": TODAY, "date_to": TODAY, "csrf_token": token}
    )
    assert made.status_code == 302
    page = admin.get("/deletion").get_data(as_text=True)
    listed = re.search(
        r'<code class="hash">([0-9a-f]{64})</code></td>\s*<td><a href="([^"]+)"', page
    )
    assert listed
    body = admin.get(listed[2]).data
    assert hashlib.sha256(body).hexdigest() == listed[1]

    text = pdf_text(body, tmp_path)
    flat = re.sub(r"\s+", "", text)
    assert "個人情報削除の証明" in text and key[1] in flat
    assert "連続intact:3records" in flat and "3/3" in flat  # tab-a: 3 records, all verified
    assert "合格pass確認済yes確認済yes" in flat  # the certificate: signed, closes the chain
    assert f"2020114{TODAY}{TODAY}" in flat  # 4 packets erased for 202011
    assert f"{TODAY}申請控え（職員用）120枚シュレッダー裁断" in flat and "op-lead立会次郎" in flat

    copy = tmp_path / "deletion.pdf"
    copy.write_bytes(body)
    capsys.readouterr()
    assert main(["evidence", "verify", str(copy), "--public-key", key[1]]) == 0
    out = capsys.readouterr().out
    assert "VALID" in out and f"from: {TODAY}" in out and "document: deletion-evidence" in out
    # The auditor needs only the kit CA's certificate.
    assert main(["evidence", "verify", str(copy), "--ca", str(pki.ca_cert)]) == 0
    out = capsys.readouterr().out
    assert "deletion evidence, certified by CN=" in out and out.rstrip().endswith("VALID")

    edited = body[:400] + bytes([body[400] ^ 1]) + body[401:]
    copy.write_bytes(edited)
    assert main(["evidence", "verify", str(copy), "--public-key", key[1]]) == 1
    assert "changed after it was signed" in capsys.readouterr().out
    copy.write_bytes(body)
    other = "00" * 32
    assert main(["evidence", "verify", str(copy), "--public-key", other]) == 1
    assert "signed by a key other than the trusted one" in capsys.readouterr().out
    unsigned = body[: body.rfind(b"\n%fieldkit-signature ")]
    copy.write_bytes(unsigned)
    assert main(["evidence", "verify", str(copy)]) == 1
    assert "no fieldkit signature" in capsys.readouterr().out
    assert client_as("auditor").get(listed[2]).data == body


def test_only_a_signer_the_kit_ca_certified_for_documents_verifies_with_the_ca(
    pki: KitPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """R24: ``--ca`` trusts the CA, not the file: another CA's signer, a certificate for
    another use, for another key, or past its validity are each refused, with the reason."""
    pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
    claims = {"document": "deletion-evidence"}
    key, cert = pki.evidence_signer()
    copy = tmp_path / "doc.pdf"

    def checked(signed: bytes) -> tuple[int, str]:
        copy.write_bytes(signed)
        capsys.readouterr()
        code = main(["evidence", "verify", str(copy), "--ca", str(pki.ca_cert)])
        return code, capsys.readouterr().out

    code, out = checked(signed_pdf.sign(pdf, key, claims, cert))
    assert code == 0 and out.rstrip().endswith("VALID"), out
    code, out = checked(signed_pdf.sign(pdf, key, claims))
    assert code == 1 and "carries no certificate" in out

    other = KitPki(tmp_path / "other-pki")
    other.init("someone else's CA")
    other.issue_evidence_signer()
    other_key, other_cert = other.evidence_signer()
    code, out = checked(signed_pdf.sign(pdf, other_key, claims, other_cert))
    assert code == 1 and "was not issued by the given CA" in out

    # The kit CA's certificate for this very key, but for client authentication.
    client = pki._issue("not a document signer", key.public_key(), server=False)
    code, out = checked(signed_pdf.sign(pdf, key, claims, client))
    assert code == 1 and "not for signing documents only" in out

    # A genuine signer certificate, shown with a document another key signed.
    stranger = Ed25519PrivateKey.generate()
    code, out = checked(signed_pdf.sign(pdf, stranger, claims, cert))
    assert code == 1 and "for another key than the one that signed" in out

    # Rotated: the new pair verifies, and so does what the old one signed before.
    before = signed_pdf.sign(pdf, key, claims, cert)
    pki.issue_evidence_signer()
    new_key, new_cert = pki.evidence_signer()
    assert new_cert.serial_number != cert.serial_number
    assert checked(signed_pdf.sign(pdf, new_key, claims, new_cert))[0] == 0
    assert checked(before)[0] == 0

    # Signed after its certificate ran out (the clock of the signer a year past it).
    line = before[before.rfind(signed_pdf.MARK) + len(signed_pdf.MARK) :]
    body = json.loads(line)
    body.pop("signature")
    body["signed_at"] = (cert.not_valid_after_utc + dt.timedelta(days=365)).isoformat()
    body["signature"] = key.sign(signed_pdf._canonical(body)).hex()
    late = before[: before.rfind(signed_pdf.MARK)] + signed_pdf.MARK
    code, out = checked(late + signed_pdf._canonical(body) + b"\n")
    assert code == 1 and "outside the certificate's validity" in out


def test_without_a_certified_key_the_hub_makes_none_and_says_what_to_run(
    web_app: Flask, pki: KitPki, client_as: ClientFactory
) -> None:
    """The web app never makes an evidence key itself (only the CA can certify one): with the
    certificate gone, the page says what the admin runs and no document is generated."""
    pki.evidence_cert.unlink()
    admin = client_as("admin")
    page = admin.get("/deletion").get_data(as_text=True)
    assert 'id="evidence-key-missing"' in page and "fieldkit pki evidence-signer" in page
    token = csrf_token(admin, "/deletion")
    refused = admin.post(
        "/deletion/documents", data={"date_from": today(), "date_to": today(), "csrf_token": token}
    )
    assert refused.status_code == 409
    assert "管理者が `fieldkit pki evidence-signer` を実行してください" in refused.get_data(
        as_text=True
    )
    assert not pki.evidence_cert.exists()
    pki.issue_evidence_signer()
    assert 'id="evidence-signer"' in admin.get("/deletion").get_data(as_text=True)
