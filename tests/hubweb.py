"""Fixtures for the hub web app tests: an app on a real hub database (SQLite or PostgreSQL),
accounts of each role, logged-in test clients, and generated statistics records."""

from __future__ import annotations

import csv
import io
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from fieldkit.config import DeviceConfig
from fieldkit.hub.db import RecordRow, SealedPacketRow, StatisticsRow
from fieldkit.hub.web.app import create_app
from fieldkit.hub.web.auth import create_account
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import AccountRow
from fieldkit.pki import (
    KitPki,
    key_fingerprint,
    load_ed25519_private,
    load_x25519_public,
    raw_public,
)
from fieldkit.sealing import seal
from fieldkit.sync.courier import new_record_id
from tests.hubkit import tablet_dir
from tests.support.municipality import MUNICIPALITY_MACHINES

PASSWORD = "correct horse battery"
OTHER_MUNICIPALITY = "271004"  # Osaka-shi
CSRF = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')


# The municipalities the tests use outside the shipped Nagano table (20), as a kit serving
# these prefectures would configure them: [hubweb] prefectures and municipalities_dir.
EXTRA_MUNICIPALITIES = {
    "13": [("131016", "東京都", "千代田区", "ちよだく")],
    "27": [("271004", "大阪府", "大阪市", "おおさかし")],
    "01": [("011002", "北海道", "札幌市", "さっぽろし")],
}


def municipality_tables(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefecture, rows in EXTRA_MUNICIPALITIES.items():
        lines = ["code,prefecture,name,kana", *(",".join(row) for row in rows)]
        (folder / f"{prefecture}-test.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def web_config(tmp_path: Path, pki: KitPki, database_url: str, **web: Any) -> DeviceConfig:
    defaults = {
        "prefectures": ["20", *EXTRA_MUNICIPALITIES],
        "municipalities_dir": municipality_tables(tmp_path / "municipalities"),
    }
    return DeviceConfig(
        device={"id": "hub-01", "role": "hub"},
        hub={"pki": pki.root, "database_url": database_url},
        hubweb={
            "cookie_secure": False,
            "secret_key_file": tmp_path / "web.key",
            **defaults,
            **web,
        },
    )


@pytest.fixture
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id at its cheapest for the hub web app: the same code path, but the throttle
    tests verify dozens of passwords, at ~0.7 s each with the production parameters on this
    shared machine. The dummy hash is made with the same parameters, as in production."""
    from argon2 import PasswordHasher

    from fieldkit.hub.web import auth

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(auth, "_hasher", cheap)
    monkeypatch.setattr(auth, "_DUMMY", cheap.hash("fieldkit-no-such-account"))


@pytest.fixture
def web_app(tmp_path: Path, pki: KitPki, database_url: str, fast_argon2: None) -> Iterator[Flask]:
    from tests.hubkit import MUNICIPALITY

    app = create_app({"FIELDKIT": web_config(tmp_path, pki, database_url), "TESTING": True})
    with Session(hubweb(app).engine) as session:
        create_account(session, "admin", PASSWORD, "admin", actor="test")
        create_account(session, "chiyoda", PASSWORD, "municipality", [MUNICIPALITY], actor="test")
        create_account(
            session, "osaka", PASSWORD, "municipality", [OTHER_MUNICIPALITY], actor="test"
        )
        create_account(session, "auditor", PASSWORD, "auditor", actor="test")
        session.commit()
    yield app
    hubweb(app).engine.dispose()


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    match = CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


# The handler the roster tests register on the hub (the roster reaches the tablets only once
# the registry has an operator).
HANDLER_PASSWORD = "hanako's long passphrase"


def add_handler(admin: FlaskClient, operator_id: str = "jugyo-1") -> TestResponse:
    """Register a counter handler, 窓口 花子, through the hub web's operators page."""
    return admin.post(
        "/operators",
        data={
            "operator_id": operator_id,
            "name": "窓口 花子",
            "duty": "handler",
            "password": HANDLER_PASSWORD,
            "csrf_token": csrf_token(admin, "/operators"),
        },
    )


def form_token(client: FlaskClient, path: str) -> dict[str, str]:
    """The page's CSRF token as form data, or nothing when the app runs without CSRF."""
    match = CSRF.search(client.get(path).get_data(as_text=True))
    return {"csrf_token": match.group(1)} if match else {}


def totp_code(app: Flask, username: str) -> str:
    """A code the account has not used yet, from its stored secret, as the phone would show.

    A code is good once per 30-second step and for one step either side of now: take now's
    step, or the next one if now's was used, or wait for a fresh step."""
    import pyotp

    while True:
        with Session(hubweb(app).engine) as session:
            row = session.get(AccountRow, username)
            assert row is not None and row.totp_secret, f"{username} has no second factor yet"
            secret, last = row.totp_secret, row.totp_last_counter
        now = int(time.time() // 30)
        for step in (now, now + 1):
            if last is None or step > last:
                return pyotp.TOTP(secret).generate_otp(step)
        time.sleep(30 - time.time() % 30 + 0.05)


def second_step(client: FlaskClient, username: str, code: str | None = None) -> Any:
    """The code page (set-up on the first login): post the code, as the user would."""
    data = form_token(client, "/login/code")  # also makes the secret on the first login
    app = client.application
    return client.post(
        "/login/code", data={**data, "code": code if code is not None else totp_code(app, username)}
    )


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    """Log in through the real steps: the password, then (for accounts that need one) the
    second factor's code computed from the stored secret. Returns the last response."""
    data = form_token(client, "/login")
    response = client.post("/login", data={**data, "username": username, "password": password})
    if response.status_code == 302 and response.headers["Location"].endswith("/login/code"):
        return second_step(client, username)
    return response


def start_hub_web(
    tmp_path: Path, pki: KitPki, database_url: str, port: int, admins: tuple[str, ...], web: str
) -> subprocess.Popen[bytes]:
    """``fieldkit hub web`` (gunicorn) on ``port`` with ``[hubweb]`` lines ``web``, after
    ``fieldkit hub create-admin`` for each of ``admins``."""
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[device]\nid = "hub-01"\nrole = "hub"\n'
        f'[hub]\npki = "{pki.root}"\ndatabase_url = "{database_url}"\n'
        f'[hubweb]\nlisten_port = {port}\nsecret_key_file = "{tmp_path / "web.key"}"\n{web}\n'
    )
    fieldkit = [sys.executable, "-m", "fieldkit", "--config", str(config), "hub"]
    env = {**os.environ, "FIELDKIT_ADMIN_PASSWORD": PASSWORD}
    for name in admins:
        subprocess.run([*fieldkit, "create-admin", name], check=True, env=env, capture_output=True)
    return subprocess.Popen(
        [*fieldkit, "web"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


ClientFactory = Callable[[str], FlaskClient]


@pytest.fixture
def client_as(web_app: Flask) -> ClientFactory:
    def make(username: str) -> FlaskClient:
        client = web_app.test_client()
        response = login(client, username)
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return make


SITES = ("公民館", "さくら苑", "中央郵便局")
MUNICIPALITIES = ("131016", OTHER_MUNICIPALITY, "011002")
SEXES = ("female", "male", "other", "unknown")
BANDS = ("0-14", "15-64", "65-74", "75+", "unknown")
OUTCOMES = ("applied", "applied", "applied", "forwarded", "declined", "abandoned")
# The counts tables' outcome columns, as a Japanese page and its exports head them.
OUTCOME_COLUMNS = ["申請", "回付", "同意なし", "中断", "合計"]
COUNTED = ("applied", "forwarded", "declined", "abandoned")


def municipality_label(code: str) -> str:
    """A municipality as the hub names it in these tests (several prefectures: with its
    prefecture), computed from the tables, not through the app."""
    from fieldkit.municipalities import MunicipalityTable

    for rows in EXTRA_MUNICIPALITIES.values():
        for row in rows:
            if row[0] == code:
                return row[1] + row[2]
    entry = MunicipalityTable.load(["20"]).get(code)
    return entry.prefecture + entry.name


def generated_statistics(n: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        month = rng.choice(("08", "09"))
        rows.append(
            {
                "record_id": new_record_id(),
                "device_id": rng.choice(("tab-a", "tab-b")),
                "site": rng.choice(SITES),
                "date": f"2026-{month}-{rng.randint(1, 28):02d}",
                "municipality": rng.choice(MUNICIPALITIES),
                "sex": rng.choice(SEXES),
                "age_band": rng.choice(BANDS),
                "mode": rng.choice(("support", "reception")),
                "outcome": rng.choice(OUTCOMES),
            }
        )
    return rows


def store_statistics(app: Flask, rows: list[dict[str, str]]) -> None:
    now = time.time()
    with Session(hubweb(app).engine) as session:
        session.execute(
            insert(RecordRow),
            [
                {
                    "record_id": r["record_id"],
                    "device_id": r["device_id"],
                    "kind": "statistics",
                    "created_at": now,
                    "received_at": now,
                    "digest": "0" * 64,
                    "signature": "test",
                }
                for r in rows
            ],
        )
        session.execute(insert(StatisticsRow), rows)
        session.commit()


def store_packet(app: Flask, pki: KitPki, municipality: str, plaintext: bytes) -> str:
    """Seal ``plaintext`` as tab-a would, and store it as ingest does (ciphertext only)."""
    from fieldkit.sealing import unb64

    MUNICIPALITY_MACHINES.register(pki, municipality)
    public = load_x25519_public(pki.receiver_dir(municipality) / "public.pem")
    record_id = new_record_id()
    packet = seal(
        plaintext,
        public,
        load_ed25519_private(tablet_dir(pki, "tab-a") / "signing.key"),
        record_id=record_id,
        device_id="tab-a",
        municipality=municipality,
    )
    assert packet.receiver_key == key_fingerprint(raw_public(public))
    now = time.time()
    with Session(hubweb(app).engine) as session:
        session.add(
            RecordRow(
                record_id=record_id,
                device_id="tab-a",
                kind="packet",
                created_at=now,
                received_at=now,
                digest="0" * 64,
                signature="test",
            )
        )
        session.flush()
        session.add(
            SealedPacketRow(
                record_id=record_id,
                municipality=municipality,
                device_id="tab-a",
                suite=packet.suite,
                receiver_key=packet.receiver_key,
                ciphertext=unb64(packet.ciphertext, "ciphertext"),
                signature=packet.signature,
                version=packet.v,
                receipt_commitment=packet.receipt_commitment,
            )
        )
        session.commit()
    return record_id


def municipality_receipt(bundle: bytes, municipality: str) -> bytes:
    """What `fieldkit packet receipt` makes on the municipality's machine for a bundle."""
    from fieldkit.sealing import receipt_for_bundle

    key = MUNICIPALITY_MACHINES.private(municipality)
    return receipt_for_bundle(bundle, key).model_dump_json().encode()


def confirm_pickup(client: FlaskClient, pickup: int, receipt: bytes) -> Any:
    """Upload a receipt for a pick-up, as the page's form does."""
    return client.post(
        f"/packets/pickups/{pickup}/confirm",
        data={
            "csrf_token": csrf_token(client, "/packets"),
            "receipt": (io.BytesIO(receipt), "receipt.json"),
        },
        content_type="multipart/form-data",
    )


def add_record(session: Session, device: str, kind: str, at: float) -> str:
    """A ledger row as ingest would write it (placeholder digest and signature)."""
    record_id = new_record_id()
    session.add(
        RecordRow(
            record_id=record_id,
            device_id=device,
            kind=kind,
            created_at=at,
            received_at=at,
            digest="0" * 64,
            signature="test",
        )
    )
    session.flush()
    return record_id


def register_operator(client: FlaskClient, operator_id: str, name: str) -> Any:
    """Add a handler to the registry through the admin's form."""
    return client.post(
        "/operators",
        data={
            "operator_id": operator_id,
            "name": name,
            "duty": "handler",
            "password": "long enough password",
            "csrf_token": csrf_token(client, "/operators"),
        },
    )


def migrate_down(url: str, revision: str) -> None:
    """Alembic's downgrade of the hub database to ``revision``."""
    from alembic import command
    from alembic.config import Config

    from fieldkit.hub.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.downgrade(config, revision)


def read_csv(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "CSV must start with the UTF-8 BOM for Excel"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def pdf_text(body: bytes, tmp_path: Path) -> str:
    """The text of a PDF response, as pdftotext lays it out."""
    path = tmp_path / "report.pdf"
    path.write_bytes(body)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


# A month of work (issue 23): facilities in several municipalities, visits on the weekdays of
# August 2026 by two tablets, and each visit's sessions with the applicants' municipalities.
MONTH_FACILITIES = (
    ("さくら苑", "welfare", "202011"),
    ("松本中央病院", "medical", "202029"),
    ("上田公民館", "public", "202037"),
    ("軽井沢郵便局", "post-office", "203211"),
)
RESIDENCES = ("202011", "202029", "202037", "203211", "202045")


def generated_month(
    app: Flask, sessions_per_visit: int = 12, seed: int = 23, month: str = "2026-08"
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Store the facilities, visits and their sessions; return (visits, statistics rows) as
    plain dicts for a test's own tally. Every fourth weekday is a card-issuance-support visit
    (no sessions; cards are recorded afterwards through the page)."""
    from fieldkit.hub.web.models import FacilityRow, VisitRow

    rng = random.Random(seed)
    year, mon = (int(p) for p in month.split("-"))
    visits: list[dict[str, Any]] = []
    rows: list[dict[str, str]] = []
    with Session(hubweb(app).engine) as session:
        facility_ids = []
        for name, kind, code in MONTH_FACILITIES:
            facility = FacilityRow(name=name, kind=kind, municipality=code, address="")
            session.add(facility)
            session.flush()
            facility_ids.append(facility.id)
        day = 1
        n = 0
        while True:
            try:
                date = f"{year:04d}-{mon:02d}-{day:02d}"
                weekday = time.strptime(date, "%Y-%m-%d").tm_wday
            except ValueError:
                break
            day += 1
            if weekday >= 5:
                continue
            n += 1
            index = rng.randrange(len(MONTH_FACILITIES))
            kind = "card-issuance-support" if n % 4 == 0 else "application-support"
            device = "tab-a" if n % 2 else "tab-b"
            visit = VisitRow(
                facility_id=facility_ids[index],
                date=date,
                kind=kind,
                device_id=device,
                lead="op-lead",
                staff=["op-lead", "op-two"],
                start_time="09:30",
                end_time="15:30",
                incidents="",
            )
            session.add(visit)
            session.flush()
            visits.append(
                {
                    "id": visit.id,
                    "date": date,
                    "kind": kind,
                    "device": device,
                    "facility": MONTH_FACILITIES[index][0],
                    "municipality": MONTH_FACILITIES[index][2],
                }
            )
            if kind != "application-support":
                continue
            for _ in range(sessions_per_visit):
                rows.append(
                    {
                        "record_id": new_record_id(),
                        "device_id": device,
                        "site": MONTH_FACILITIES[index][0],
                        "date": date,
                        "municipality": rng.choice(RESIDENCES),
                        "sex": rng.choice(SEXES),
                        "age_band": rng.choice(BANDS),
                        "mode": rng.choice(("support", "reception")),
                        "outcome": rng.choice(OUTCOMES),
                    }
                )
        session.commit()
    if rows:
        store_statistics(app, rows)
    return visits, rows


class Visitor:
    """One logged-in browser context; collects console errors (CSP reports land there)."""

    def __init__(self, browser: Any, base: str, username: str, app: Flask) -> None:
        self.base = base
        self.context = browser.new_context(locale="ja-JP", viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )
        self.page.goto(f"{base}/login")
        self.page.get_by_label("ユーザー名").fill(username)
        self.page.get_by_label("パスワード").fill(PASSWORD)
        self.page.get_by_role("button", name="ログイン").click()
        # The second factor, as the user's phone would compute it (set up on the first login).
        self.page.wait_for_url(f"{base}/login/code")
        self.code_page_findings = self.axe_serious()
        self.page.get_by_label("確認コード（6桁）").fill(totp_code(app, username))
        self.page.get_by_role("button", name="確認").click()
        self.page.wait_for_url(f"{base}/")

    def go(self, path: str) -> int:
        response = self.page.goto(f"{self.base}{path}")
        return int(response.status)

    def axe_serious(self) -> list[str]:
        from axe_playwright_python.sync_playwright import Axe

        results = Axe().run(self.page)
        return [
            f"{v['id']} ({v['impact']}) on {self.page.url}"
            for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
