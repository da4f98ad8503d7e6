"""業務経費支出一覧 with receipts (issue 23 item 5; specification §7, §8): each line with its
receipt, checked by type and size, stored once and hashed; exported as XLSX (text stays text)
and the receipts as a ZIP named by their hashes; advertising against its cap."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import openpyxl
from flask.testing import FlaskClient

from tests.hubweb import ClientFactory, csrf_token

PDF = b"%PDF-1.4\n% a scanned receipt\n" + bytes(range(256)) * 40
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 30
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20


def record(
    client: FlaskClient, body: bytes | None, name: str = "receipt.pdf", **fields: str
) -> Any:
    data: dict[str, Any] = {
        "spent_on": "2026-08-20",
        "category": "supplies",
        "payee": "文具店",
        "description": "申請書郵送用封筒",
        "amount_yen": "3300",
        "csrf_token": csrf_token(client, "/expenses"),
        **fields,
    }
    if body is not None:
        data["receipt"] = (io.BytesIO(body), name)
    return client.post("/expenses", data=data, content_type="multipart/form-data")


def test_expenses_with_receipts_stored_once_and_exported(client_as: ClientFactory) -> None:
    admin = client_as("admin")
    hostile = '=HYPERLINK("http://example.invalid","x")'
    assert record(admin, PDF).status_code == 302
    assert (
        record(admin, JPEG, "photo.jpg", category="advertising", amount_yen="10000").status_code
        == 302
    )
    assert (
        record(admin, PDF, "same-again.pdf", description=hostile, amount_yen="700").status_code
        == 302
    )
    big_png = PNG + bytes(2 * 1024 * 1024)  # over the app's 1 MiB: receipts may be larger
    assert (
        record(admin, big_png, "scan.png", category="rental", amount_yen="50000").status_code == 302
    )

    book = openpyxl.load_workbook(io.BytesIO(admin.get("/expenses/list.xlsx").data))
    rows = list(book.worksheets[0].iter_rows(min_row=4, values_only=True))
    assert [r[5] for r in rows] == [3300, 10000, 700, 50000, 64000]
    assert rows[-1][0] == "合計"
    hashes = [r[7] for r in rows[:-1]]
    assert hashes == [hashlib.sha256(b).hexdigest() for b in (PDF, JPEG, PDF, big_png)]
    described = next(c for c in book.worksheets[0]["E"] if c.value == hostile)
    assert described.data_type == "s"  # text, never a formula

    archive = zipfile.ZipFile(io.BytesIO(admin.get("/expenses/receipts.zip").data))
    names = sorted(archive.namelist())
    assert len(names) == 3  # the PDF cited twice is stored (and zipped) once
    for body, extension in ((PDF, "pdf"), (JPEG, "jpg"), (big_png, "png")):
        name = f"receipts/{hashlib.sha256(body).hexdigest()}.{extension}"
        assert archive.read(name) == body
    assert {r[6] for r in rows[:-1]} == set(names)

    page = admin.get("/expenses").get_data(as_text=True)
    # No card handed over yet: the cap is 0 and the advertising line is over it.
    assert "10,000円" in page and "上限超過" in page
    audit = admin.get("/audit").get_data(as_text=True)
    assert "expense-create" in audit and "申請書郵送用封筒" not in audit
    auditor = client_as("auditor")
    assert auditor.get("/expenses/list.xlsx").status_code == 200
    token = csrf_token(auditor, "/expenses")
    assert auditor.post("/expenses", data={"csrf_token": token}).status_code == 403
    assert client_as("chiyoda").get("/expenses").status_code == 403


def test_bad_receipts_and_lines_are_refused_in_japanese_first(client_as: ClientFactory) -> None:
    admin = client_as("admin")
    cases = [
        (b"just some text", "receipt.pdf", {}, "領収書はPDF・JPEG・PNGのみ受け付けます"),
        (b"", "empty.pdf", {}, "領収書のファイルが空です"),
        (None, "", {}, "領収書を添付してください"),
        (PDF + bytes(5 * 1024 * 1024), "huge.pdf", {}, "領収書は5MBまでです"),
        (PDF, "receipt.pdf", {"amount_yen": "三千円"}, "数字（整数）で入力してください"),
        (PDF, "receipt.pdf", {"spent_on": "8/20"}, "日付は YYYY-MM-DD で入力してください"),
        (PDF, "receipt.pdf", {"payee": " "}, "支払先: 入力してください"),
        (PDF, "receipt.pdf", {"category": "beer"}, "費目: 一覧から選んでください"),
    ]
    for body, name, fields, message in cases:
        response = record(admin, body, name, **fields)
        text = response.get_data(as_text=True)
        assert response.status_code == 400, message
        assert "記録できません" in text and message in text, message
    too_large = record(admin, PDF + bytes(6 * 1024 * 1024), "huge.pdf")
    assert too_large.status_code == 413
    assert "送信されたデータが大きすぎます" in too_large.get_data(as_text=True)
    # The 5 MiB allowance is the receipt form's only: elsewhere the app's 1 MiB holds.
    token = csrf_token(admin, "/incidents")
    padded = admin.post("/incidents", data={"what": "x" * (2 * 1024 * 1024), "csrf_token": token})
    assert padded.status_code == 413
    book = openpyxl.load_workbook(io.BytesIO(admin.get("/expenses/list.xlsx").data))
    assert list(book.worksheets[0].iter_rows(min_row=4, values_only=True)) == []
