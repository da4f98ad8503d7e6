"""The second factor (issue 17): RFC 6238 TOTP, 6 digits, 30-second steps.

A code is accepted for the current step or one step either side (a phone's clock a little
off), and never twice: the account keeps the last step a code was accepted for, and a code
for that step or an earlier one is refused. The secret is shown once, on the setup page, and
never logged or audited.
"""

from __future__ import annotations

import hmac

import pyotp
import segno
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from fieldkit.hub.web.models import AccountRow

STEP = 30
WINDOW = 1  # steps either side of now
ISSUER = "fieldkit hub"


def new_secret() -> str:
    """160 random bits in base32, as RFC 4226 recommends."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret, interval=STEP).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_code(uri: str) -> str:
    """The ``otpauth:`` URI as a QR code, an SVG data URI for an ``<img>`` (no inline style)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=4, border=4))


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step ``code`` is valid for, within the window around ``now``."""
    totp = pyotp.TOTP(secret, interval=STEP)
    current = int(now // STEP)
    code = code.strip()
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        # Every step is compared (no early exit): the time taken tells nothing.
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found if len(code) == 6 and code.isdigit() else None


def use_step(session: Session, username: str, step: int) -> bool:
    """Record ``step`` as used, if no code for it or a later step was used before.

    One conditional UPDATE, so two workers given the same code cannot both accept it."""
    result = session.execute(
        update(AccountRow)
        .where(
            AccountRow.username == username,
            or_(AccountRow.totp_last_counter.is_(None), AccountRow.totp_last_counter < step),
        )
        .values(totp_last_counter=step)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
