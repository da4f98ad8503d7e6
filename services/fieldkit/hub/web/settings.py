"""The ``[hubweb]`` config section: where the hub web app listens and how it guards logins."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from fieldkit.models import Section

# Roles that always need a second factor (issue 17): they can download packets or change
# the kit. The auditor is in the default list too (see ``second_factor_roles``).
SECOND_FACTOR_ALWAYS = ("admin", "municipality")


class HubWebSection(Section):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=2, ge=1, le=32)
    # The session-signing key: created 0600 on first start, so logins survive a restart.
    secret_key_file: Path = Path("/var/lib/fieldkit/hub-web.key")
    # Cookies only over HTTPS (the reverse proxy terminates TLS); off only for local tests.
    cookie_secure: bool = True
    # gunicorn terminates TLS itself with this certificate and key (the hub image: the kit
    # PKI's hub certificate); unset, a proxy in front does (``proxy_hops``).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # How many proxies in front of gunicorn append to X-Forwarded-For. The app listens on
    # loopback behind the TLS proxy, so 1: the client's address is the one that proxy saw.
    # 0 when clients reach gunicorn directly (then the header would be theirs to forge).
    proxy_hops: int = Field(default=1, ge=0, le=5)
    session_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Login throttling, all counted in the database so every gunicorn worker sees it
    # (docs/hub-web.md has the numbers' reasons). One account from one address:
    lockout_failures: int = Field(default=5, ge=1, le=1000)
    lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # One address, whatever names it tries (a password spray from one place):
    address_failures: int = Field(default=10, ge=1, le=10000)
    address_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Everyone (a spray from many addresses): past this, only addresses where someone logged
    # in within ``known_address_days`` may still try.
    global_failures: int = Field(default=100, ge=1, le=100000)
    global_minutes: int = Field(default=60, ge=1, le=24 * 60)
    known_address_days: int = Field(default=30, ge=1, le=366)
    # Who needs the TOTP second factor; admin and municipality always do.
    second_factor_roles: tuple[str, ...] = ("admin", "municipality", "auditor")
    programme_days: int = Field(default=40, ge=1, le=366)
    # The municipality table the hub names municipalities from (as the kiosk's ``prefectures``):
    # the shipped tables of these prefectures, plus any CSV in ``municipalities_dir``.
    prefectures: list[str] = Field(default=["20"], min_length=1)
    municipalities_dir: Path | None = None
    # Japanese PDF font (Debian fonts-ipaexfont-gothic); the built-in CID font if missing.
    pdf_font: Path = Path("/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf")

    @field_validator("second_factor_roles")
    @classmethod
    def _admin_and_municipality_always(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(roles) - {"admin", "municipality", "auditor"}
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}")
        missing = set(SECOND_FACTOR_ALWAYS) - set(roles)
        if missing:
            raise ValueError(
                f"admin and municipality always need a second factor: {sorted(missing)}"
            )
        return tuple(sorted(set(roles)))

    @model_validator(mode="after")
    def _tls_pair(self) -> HubWebSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self
