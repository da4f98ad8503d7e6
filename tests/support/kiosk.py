"""Driving the kiosk web app in a test: an app with two operators, CSRF-aware posts, the walk
to the review page."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from fieldkit.config import DeviceConfig
from fieldkit.kiosk.app import create_app, kiosk
from fieldkit.kiosk.settings import ContactDesk, OperatorEntry
from tests.conftest import OPERATOR_PASSWORD as PASSWORD

__all__ = ["APPLICATION_ID", "CONTACT", "PASSWORD", "csrf", "login", "make_app", "post", "walk"]

APPLICATION_ID = "98765432109876543210987"  # synthetic
# The receipt's contact desk (made up, in the form a kit's config has it).
CONTACT = ContactDesk(phone="0263-00-0000", hours_ja="平日 9時〜17時", hours_en="Weekdays 9-17")


def make_app(kit_config: DeviceConfig, operator_hash: str, **kiosk: Any) -> Flask:
    settings = kit_config.kiosk.model_copy(
        update={
            "operators": [
                OperatorEntry(id="op-01", name="窓口 一郎", password_hash=operator_hash),
                OperatorEntry(
                    id="op-02", name="窓口 二郎", password_hash=operator_hash, disabled=True
                ),
            ],
            "contact": CONTACT,
            **kiosk,
        }
    )
    config = kit_config.model_copy(update={"kiosk": settings})
    return create_app({"FIELDKIT": config, "TESTING": True})


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        r'name="csrf_token" value="([^"]+)"', page
    )
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def post(client: FlaskClient, path: str, data: dict[str, str], page: str | None = None) -> Any:
    return client.post(path, data={**data, "csrf_token": csrf(client, page or path)})


def login(client: FlaskClient, operator: str = "op-01", password: str = PASSWORD) -> Any:
    return post(client, "/login", {"operator_id": operator, "password": password})


def walk(client: FlaskClient, app: Flask, municipality: str = "202011") -> None:
    """To the review page. 長野市 (202011) is offered only to a kiosk without an enrolment
    (every municipality) or one holding its receiver key."""
    login(client)
    post(client, "/", {"mode": "support"})
    post(client, "/scan", {"application_id": "9876 5432 1098 7654 3210 987"})
    post(client, "/terms", {"answer": "agree"})
    # The photo arrives from the capture service (issue 3); the state machine takes it here.
    kiosk(app).counter.set_photo(b"\xff\xd8print\xff\xd9", b"\xff\xd8online\xff\xd9")
    post(client, "/options", {"e_certificate": "yes", "braille": "no"})
    post(
        client, "/statistics", {"municipality": municipality, "sex": "female", "age_band": "80-89"}
    )
