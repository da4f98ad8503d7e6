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

PASSWORD = "correct horse battery"
OTHER_MUNICIPALITY = "271004"  # Osaka-shi
CSRF = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')


def web_config(tmp_path: Path, pki: KitPki, database_url: str, **web: Any) -> DeviceConfig:
    return DeviceConfig(
        device={"id": "hub-01", "role": "hub"},
        hub={"pki": pki.root, "database_url": database_url},
        hubweb={"cookie_secure": False, "secret_key_file": tmp_path / "web.key", **web},
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
OUTCOMES = ("applied", "applied", "applied", "forwarded", "abandoned")


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

    if not pki.receiver_dir(municipality).exists():
        pki.create_receiver(municipality)
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
            )
        )
        session.commit()
    return record_id


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
