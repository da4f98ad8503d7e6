"""What the hub web app's views share, apart from the factory (as the Flask tutorial keeps
``db`` apart from ``create_app``): the extensions, the per-app state and the request's database
session. Blueprints import from here, the factory imports the blueprints: no cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from flask import Flask, current_app, g
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fieldkit.config import DeviceConfig
from fieldkit.municipalities import MunicipalityTable
from fieldkit.pki import KitPki

EXTENSION = "fieldkit.hub.web"

csrf = CSRFProtect()
login_manager = LoginManager()


@dataclass
class HubWeb:
    """What the views share, attached to the app (never a module global)."""

    config: DeviceConfig
    engine: Engine
    pki: KitPki
    municipalities: MunicipalityTable


def hubweb(app: Flask | None = None) -> HubWeb:
    return cast(HubWeb, (app or current_app).extensions[EXTENSION])


def db() -> Session:
    """The request's database session (closed at the end of the request)."""
    if "db" not in g:
        g.db = Session(hubweb().engine, expire_on_commit=False)
    return cast(Session, g.db)
