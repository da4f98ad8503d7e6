"""The ``[hubweb]`` config section: where the hub web app listens and how it guards logins."""

from pathlib import Path

from pydantic import Field

from fieldkit.models import Section


class HubWebSection(Section):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=2, ge=1, le=32)
    # The session-signing key: created 0600 on first start, so logins survive a restart.
    secret_key_file: Path = Path("/var/lib/fieldkit/hub-web.key")
    # Cookies only over HTTPS (the reverse proxy terminates TLS); off only for local tests.
    cookie_secure: bool = True
    session_minutes: int = Field(default=30, ge=1, le=24 * 60)
    lockout_failures: int = Field(default=5, ge=1, le=100)
    lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    programme_days: int = Field(default=40, ge=1, le=366)
    # Japanese PDF font (Debian fonts-ipaexfont-gothic); the built-in CID font if missing.
    pdf_font: Path = Path("/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf")
