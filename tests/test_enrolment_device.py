"""Enrolment on the tablet itself: the kiosk's enrolment screen against the real hub
enrolment server (R16, R31; Japanese first), and the signing key every command uses once a
tablet is enrolled (issue 17 item 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from fieldkit.config import ConfigError, DeviceConfig, load_config
from fieldkit.enrolment.local import enrol_locally
from fieldkit.enrolment.protocol import REFUSALS
from fieldkit.kiosk.text import say
from fieldkit.pki import KitPki, load_ed25519_private, raw_public, read_roster
from fieldkit.wipe.record import public_hex
from fieldkit.wipe.service import Wiper
from tests.conftest import write_config
from tests.enrolkit import EnrolmentHub, Tablet, make_tablet
from tests.support.kiosk import csrf, make_app
from tests.support.kiosk_browser import Counter, serve
from tests.wipe_fixtures import catalogue_dirs, wipe_body

FIELDKIT = [sys.executable, "-m", "fieldkit"]


def enrolling_kiosk(kit_config: DeviceConfig, operator_hash: str, tablet: Tablet) -> Flask:
    """The kiosk of a fresh tablet: the image turns the enrolment screen on."""
    fresh = kit_config.model_copy(
        update={
            "sync": kit_config.sync.model_copy(update={"bundle": tablet.enrolment}),
            "enrol": kit_config.enrol.model_copy(
                update={"ca_cert": tablet.ca, "kiosk_screen": True}
            ),
        }
    )
    return make_app(fresh, operator_hash)


@pytest.fixture
def fresh_kiosk(
    kit_config: DeviceConfig, operator_hash: str, tmp_path: Path, pki: KitPki
) -> tuple[Flask, Tablet]:
    """The kiosk app of a tablet fresh from the image, and that tablet."""
    tablet = make_tablet(tmp_path / "tablet", pki.ca_cert)
    return enrolling_kiosk(kit_config, operator_hash, tablet), tablet


def test_a_fresh_tablet_shows_the_enrolment_screen_and_enrols_from_it(
    enrolment_hub: EnrolmentHub, fresh_kiosk: tuple[Flask, Tablet], pki: KitPki
) -> None:
    """R16 R31: every page leads to the enrolment screen until the tablet is enrolled; staff
    type the hub address and the code; a refusal is said in Japanese (English on request)
    and leaves nothing behind; the right code enrols the tablet."""
    app, tablet = fresh_kiosk
    client = app.test_client()
    first = client.get("/")
    assert first.status_code == 302 and first.headers["Location"].endswith("/enrol")
    assert client.get("/login").headers["Location"].endswith("/enrol")
    page = client.get("/enrol").get_data(as_text=True)
    assert say("enrol_intro", "ja") in page and say("enrol_button", "ja") in page

    code = enrolment_hub.code("tab-k")
    wrong = client.post(
        "/enrol",
        data={
            "hub": enrolment_hub.address,
            "code": code[:5] + "0000-0000-0000-0000",
            "csrf_token": csrf(client, "/enrol"),
        },
    )
    assert wrong.status_code == 400
    assert REFUSALS["bad-code"][0] in wrong.get_data(as_text=True)
    assert tablet.untouched()
    english = client.post(
        "/enrol?lang=en",
        data={"hub": "127.0.0.1:1", "code": code, "csrf_token": csrf(client, "/enrol")},
    )
    assert REFUSALS["hub-unreachable"][1] in english.get_data(as_text=True)
    client.get("/enrol?lang=ja")

    done = client.post(
        "/enrol",
        data={"hub": enrolment_hub.address, "code": code, "csrf_token": csrf(client, "/enrol")},
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    assert say("enrol_done", "ja") in done.get_data(as_text=True)
    signing = load_ed25519_private(tablet.enrolment / "signing.key")
    assert read_roster(pki.roster)["tab-k"].signing_public == raw_public(signing.public_key())
    # Enrolled: the kiosk goes back to its login page.
    assert "/login" in client.get("/").headers["Location"]


def test_wipe_scan_on_an_enrolled_tablet_signs_with_the_enrolled_key_and_makes_none(
    tmp_path: Path, pki: KitPki
) -> None:
    """Issue 17 item 10: `fieldkit wipe scan --daily` signed its record with a key it made
    for itself; now every command signs with the enrolment's key, and none makes a key on an
    enrolled tablet (a missing one is an error, not a new key)."""
    enrolment = enrol_locally(pki, "tab-w", tmp_path / "enrolment")
    root, tag = catalogue_dirs(tmp_path)
    config_file = write_config(
        tmp_path, wipe_body(root, tag) + f'\n[sync]\nbundle = "{enrolment}"\n'
    )
    config = load_config(config_file)
    assert config.sync.bundle == enrolment
    own_key = config.wipe.device_key
    assert not own_key.exists()

    run = subprocess.run(
        [*FIELDKIT, "--config", str(config_file), "wipe", "scan", "--daily", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    record = json.loads(run.stdout)
    enrolled = raw_public(load_ed25519_private(enrolment / "signing.key").public_key()).hex()
    assert record["signer"] == enrolled, run.stderr
    assert not own_key.exists()
    # The check can fail: a Wiper made the way `wipe scan` made it before the fix (without
    # the enrolled key) makes a key of its own and signs with it.
    before_the_fix = Wiper(config.wipe, config.device.id)
    before_the_fix.close()
    assert own_key.exists() and public_hex(before_the_fix.key) != enrolled
    own_key.unlink()

    (enrolment / "signing.key").unlink()
    missing = subprocess.run(
        [*FIELDKIT, "--config", str(config_file), "wipe", "scan", "--daily"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2
    assert "signing key is missing" in missing.stderr
    assert not (enrolment / "signing.key").exists() and not own_key.exists()


def test_the_enrolment_lays_the_hubs_settings_over_the_device_config(
    tmp_path: Path, pki: KitPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the hub said at enrolment (enrolment.toml) wins over the image's config file; the
    environment still wins over both; an unreadable enrolment file is named, not ignored."""
    enrolment = enrol_locally(
        pki, "tab-e", tmp_path / "enrolment", hub_port=18883, site="会場", device_config=True
    )
    config_file = write_config(tmp_path, f'\n[sync]\nbundle = "{enrolment}"\nhub_port = 1\n')
    config = load_config(config_file)
    assert (config.device.id, config.device.site, config.sync.hub_port) == ("tab-e", "会場", 18883)
    monkeypatch.setenv("FIELDKIT_SYNC__HUB_PORT", "28883")
    assert load_config(config_file).sync.hub_port == 28883
    (enrolment / "enrolment.toml").write_text("[device\n")
    with pytest.raises(ConfigError, match=r"enrolment file .* is unreadable"):
        load_config(config_file)


def test_the_enrolment_screen_in_the_browser(
    browser: Any,
    enrolment_hub: EnrolmentHub,
    fresh_kiosk: tuple[Flask, Tablet],
) -> None:
    """The screen staff see on a fresh tablet, in Chromium: axe-core finds nothing serious on
    it, a refusal or the success; saved to $FIELDKIT_SCREENSHOTS (docs/screenshots/)."""
    base, stop = serve(fresh_kiosk[0])
    try:
        staff = Counter(browser, base)
        staff.page.goto(f"{base}/")
        staff.page.wait_for_url(f"{base}/enrol")
        staff.check("enrol")
        code = enrolment_hub.code("tab-b9")
        staff.page.get_by_label("ハブのアドレス").fill(enrolment_hub.address)
        staff.page.get_by_label("登録コード").fill(code.replace(code[5:9], "0000"))
        staff.page.get_by_role("button", name="登録する").click()
        assert REFUSALS["bad-code"][0] in staff.page.inner_text("#enrol-error")
        staff.check("enrol-refused")
        staff.page.get_by_label("登録コード").fill(code)
        staff.page.get_by_role("button", name="登録する").click()
        assert say("enrol_done", "ja") in staff.page.inner_text("#enrolled")
        staff.check("enrolled")
        # (The refusal page's 400 is a console line; nothing the page's policy blocked is.)
        assert not [e for e in staff.console_errors if "Content Security Policy" in e]
    finally:
        stop()
