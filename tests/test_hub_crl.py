"""The kit's CRL over a programme longer than its 30 days (issue 17 item 4; R16).

The hub's broker runs as `fieldkit up` runs it, with every process of it on a shifted wall
clock (tests/support/wallclock.py): 31 days on, tablets still connect because the hub-broker
service signed the CRL again; with its check pushed out of reach, the same step locks every
tablet out (the protection shown both ways). A CRL that cannot be renewed raises the alarm
on the dashboard and in `fieldkit hub crl`'s exit status.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask

from fieldkit.hub.crl import crl_status
from fieldkit.pki import KitPki
from tests.hubkit import device_client, free_port, tablet_dir, try_connect
from tests.hubweb import ClientFactory
from tests.support.wallclock import Wallclock

DAY = 86_400


def hub_config(tmp_path: Path, pki: KitPki, port: int, check_seconds: float) -> Path:
    config = tmp_path / "hub.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [device]
            id = "hub-01"
            role = "hub"
            [bus]
            port = 0
            runtime_dir = "{tmp_path / "run"}"
            [runner]
            services = ["hub-broker"]
            [hub]
            pki = "{pki.root}"
            broker_port = {port}
            broker_dir = "{tmp_path / "hub-broker"}"
            database_url = "sqlite:///{tmp_path / "hub.sqlite"}"
            crl_check_seconds = {check_seconds}
            """
        )
    )
    return config


@contextmanager
def hub_on_shifted_clock(
    tmp_path: Path, pki: KitPki, check_seconds: float
) -> Iterator[tuple[int, Wallclock]]:
    clock = Wallclock(tmp_path / "clock")
    port = free_port()
    config = hub_config(tmp_path, pki, port, check_seconds)
    kit = subprocess.Popen(
        [sys.executable, "-m", "fieldkit", "--config", str(config), "up"],
        stdin=subprocess.DEVNULL,
        env=os.environ | clock.environment,
    )
    try:
        yield port, clock
    finally:
        kit.terminate()
        kit.wait(timeout=30)


def connects_within(pki: KitPki, port: int, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    outcome = "never tried"
    while time.monotonic() < deadline:
        outcome = try_connect(device_client(tablet_dir(pki, "tab-a")), port)
        if outcome == "connected":
            return outcome
        time.sleep(0.5)
    return outcome


@pytest.mark.parametrize(
    ("check_seconds", "after_31_days"),
    [(1.0, "connected"), (3600.0, "refused")],
    ids=["renewed-by-the-hub", "protection-off"],
)
def test_tablets_still_connect_31_days_on(
    tmp_path: Path, pki: KitPki, check_seconds: float, after_31_days: str
) -> None:
    with hub_on_shifted_clock(tmp_path, pki, check_seconds) as (port, clock):
        assert connects_within(pki, port, 20) == "connected"
        clock.step(31 * DAY)
        # The service checks every `check_seconds`; 10 s covers the check and the restart.
        outcome = connects_within(pki, port, 10)
        assert outcome.startswith(after_31_days), outcome
    if after_31_days == "connected":
        # Signed on the shifted clock: valid 30 days from 31 days on.
        due = pki.crl_next_update()
        assert due is not None and due > dt.datetime.now(dt.UTC) + dt.timedelta(days=60)


def test_the_alarm_comes_a_week_early_and_renewal_clears_it(tmp_path: Path, pki: KitPki) -> None:
    pki.write_crl(valid_for=dt.timedelta(days=20))
    assert not crl_status(pki).alarm
    pki.write_crl(valid_for=dt.timedelta(days=5))
    status = crl_status(pki)
    assert status.alarm and "期限が近づいています" in status.message
    pki.write_crl(valid_for=dt.timedelta(seconds=-1))
    assert "lapsed" in crl_status(pki).message

    config = hub_config(tmp_path, pki, free_port(), 60)

    def hub_crl() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "fieldkit",
                "--config",
                str(config),
                "hub",
                "crl",
                "--renew-if-due",
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    # The CA key out of reach: renewing fails, and the command (the daily timer) says so.
    key = pki.ca_key
    hidden = key.with_suffix(".away")
    key.rename(hidden)
    try:
        done = hub_crl()
    finally:
        hidden.rename(key)
    assert done.returncode == 1
    assert "the CRL was not renewed" in done.stdout and "lapsed" in done.stdout
    renewed = hub_crl()
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert "CRL renewed" in renewed.stdout
    assert not crl_status(pki).alarm


def test_the_dashboard_shows_the_alarm_to_the_admin_only(
    web_app: Flask, client_as: ClientFactory, pki: KitPki
) -> None:
    admin = client_as("admin")
    pki.write_crl(valid_for=dt.timedelta(days=20))
    assert 'role="alert"' not in admin.get("/").get_data(as_text=True)
    pki.write_crl(valid_for=dt.timedelta(days=3))
    page = admin.get("/").get_data(as_text=True)
    assert 'role="alert"' in page and "期限が近づいています" in page
    municipality = client_as("chiyoda")
    assert 'role="alert"' not in municipality.get("/").get_data(as_text=True)
