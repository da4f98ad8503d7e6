"""Enrolment fixtures: the hub's EST enrolment server under gunicorn (TLS with the hub's
certificate from the kit CA) and fresh tablets with the kit CA baked in."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.enrolment.protocol import CACERTS
from fieldkit.hub.db import make_engine
from fieldkit.hub.web.models import WebAuditRow
from fieldkit.pki import KitPki
from tests.hubkit import free_port, wait_for

FIELDKIT = [sys.executable, "-m", "fieldkit"]


def add_hub_operator(database_url: str) -> None:
    """An operator on the hub's roster (op-07), which enrolment hands to the tablet."""
    import time

    from fieldkit.hub.web.auth import hash_password
    from fieldkit.hub.web.models import OperatorRow

    engine = make_engine(database_url)
    with Session(engine) as session:
        session.add(
            OperatorRow(
                operator_id="op-07",
                name="窓口 七子",
                duty="handler",
                password_hash=hash_password("op-07-pass-2026"),
                disabled=False,
                updated_at=time.time(),
            )
        )
        session.commit()
    engine.dispose()


def enrolment_code(config: Path, device: str, *extra: str) -> str:
    """A one-time code for ``device``, made as the provisioning admin makes one."""
    run = subprocess.run(
        [*FIELDKIT, "--config", str(config), "pki", "code", device, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = re.search(r"enrolment code for \S+: ([0-9A-Z-]{24})", run.stdout)
    assert found, run.stdout + run.stderr
    return found.group(1)


@dataclass
class EnrolmentHub:
    """The hub's EST server (gunicorn, TLS with the hub certificate) and its config."""

    config: Path
    port: int
    pki: KitPki
    database_url: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def code(self, device: str, *extra: str) -> str:
        return enrolment_code(self.config, device, *extra)

    def audit(self) -> list[tuple[str, str, dict[str, object]]]:
        engine = make_engine(self.database_url)
        try:
            with Session(engine) as session:
                rows = session.scalars(select(WebAuditRow).order_by(WebAuditRow.id))
                return [(r.action, r.target, dict(r.detail)) for r in rows]
        finally:
            engine.dispose()

    def refusals(self) -> list[str]:
        return [str(d["reason"]) for a, _, d in self.audit() if a == "enrol-refused"]

    def sql(self, statement: object) -> None:
        engine = make_engine(self.database_url)
        try:
            with Session(engine) as session:
                session.execute(statement)  # type: ignore[call-overload]
                session.commit()
        finally:
            engine.dispose()


def hub_config(
    tmp_path: Path,
    pki: KitPki,
    database_url: str,
    port: int,
    *,
    hub_settings: dict[str, str] | None = None,
    **enrol: str,
) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "hub.toml"
    extra = "".join(f"{k} = {v}\n" for k, v in enrol.items())
    hub_extra = "".join(f"{k} = {v}\n" for k, v in (hub_settings or {}).items())
    config.write_text(
        f'[device]\nid = "hub-01"\nrole = "hub"\n'
        f'[hub]\npki = "{pki.root}"\ndatabase_url = "{database_url}"\nbroker_port = 8883\n'
        f"{hub_extra}"
        f'[enrol]\nlisten_host = "127.0.0.1"\nlisten_port = {port}\n'
        f'antivirus_mirror = "https://hub.kit.lan:8081"\n{extra}'
    )
    return config


@pytest.fixture
def enrolment_hub(tmp_path: Path, pki: KitPki, sqlite_url: str) -> Iterator[EnrolmentHub]:
    with start_hub(tmp_path, pki, sqlite_url) as hub:
        yield hub


@contextlib.contextmanager
def start_hub(
    tmp_path: Path,
    pki: KitPki,
    database_url: str,
    *,
    wrap: tuple[str, ...] = (),
    hub_settings: dict[str, str] | None = None,
    **enrol: str,
) -> Iterator[EnrolmentHub]:
    """The EST server; ``wrap`` is a command prefix it runs under (e.g. a mount namespace)."""
    port = free_port()
    config = hub_config(tmp_path, pki, database_url, port, hub_settings=hub_settings, **enrol)
    process = subprocess.Popen(
        [*wrap, *FIELDKIT, "--config", str(config), "hub", "enrol-server"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    hub = EnrolmentHub(config, port, pki, database_url)

    def serving() -> bool:
        try:
            return https(hub, "GET", CACERTS)[0] == 200
        except OSError:
            return False

    try:
        wait_for(serving, 60, "the enrolment server to answer over TLS")
        yield hub
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    # Personal data never reaches the log, and neither does a code or a key.
    assert b"PRIVATE KEY" not in errors


@dataclass
class Tablet:
    """A fresh tablet: a device config as the image ships it and the kit CA baked in."""

    root: Path
    config: Path
    ca: Path

    @property
    def enrolment(self) -> Path:
        return self.root / "enrolment"

    def enrol(
        self, hub: str, code: str, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *FIELDKIT,
                "--config",
                str(self.config),
                "enrol",
                "--hub",
                hub,
                "--code",
                code,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
        )

    def untouched(self) -> bool:
        """Nothing of an enrolment on the tablet, not even a temporary directory."""
        return not self.enrolment.exists() and not list(self.root.glob(".enrolment*"))


def make_tablet(root: Path, ca: Path) -> Tablet:
    root.mkdir(parents=True, exist_ok=True)
    baked = root / "kit-ca.crt"
    baked.write_bytes(ca.read_bytes())
    config = root / "device.toml"
    config.write_text(
        '[device]\nid = "unenrolled"\n'
        f'[sync]\nbundle = "{root / "enrolment"}"\noutbox = "{root / "outbox" / "o.sqlite"}"\n'
        f'[enrol]\nca_cert = "{baked}"\n'
        f'[wipe]\ndevice_key = "{root / "keys" / "device-ed25519.pem"}"\n'
    )
    return Tablet(root, config, baked)


@pytest.fixture
def tablet(tmp_path: Path, pki: KitPki) -> Tablet:
    return make_tablet(tmp_path / "tablet", pki.ca_cert)


def https(
    hub: EnrolmentHub, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request to the enrolment server, trusting the kit CA only."""
    context = ssl.create_default_context(cafile=str(hub.pki.ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", hub.port, context=context, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
