"""The hub's side of enrolment (R16, R31): one-time codes, and the EST server that signs a
tablet's own certificate request (RFC 7030 simple enrolment) and hands it its device config.

A code is bound to one device id, works once, expires (24 h by default) and is stored as an
argon2id hash of its secret part only. Every code made, used or refused is in the hub web's
audit log. The EST server runs as its own gunicorn (``fieldkit hub enrol-server``) with the
hub's server certificate from the kit CA, which the tablets pin.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import pkcs7
from flask import Blueprint, Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fieldkit.config import DeviceConfig, load_config
from fieldkit.enrolment.protocol import (
    CACERTS,
    DEVICE_CONFIG,
    PKCS7_CERTS,
    REFUSAL_HEADER,
    SIMPLEENROLL,
    ConfigRequest,
    DeviceSettings,
    ProtocolError,
    config_message,
    new_code,
    normalise_code,
    prior_key_of,
    signing_key_of,
)
from fieldkit.enrolment.settings import EnrolSection
from fieldkit.hub.db import make_engine, upgrade
from fieldkit.hub.roster import tablet_roster
from fieldkit.hub.site import SiteError, site_enrol
from fieldkit.hub.web import audit
from fieldkit.hub.web.models import EnrolmentCodeRow
from fieldkit.pki import KitPki, PkiError, check_device_id, read_roster

log = logging.getLogger(__name__)
EXTENSION = "fieldkit.hub.enrolment"
# The tablet fetches its device config right after its certificate; not long after.
CONFIG_WINDOW = 15 * 60.0
_hasher = PasswordHasher()


class CodeError(Exception):
    """A code could not be made; the message says why."""


def create_code(
    session: Session, device_id: str, *, actor: str, hours: float = 24.0, site: str = ""
) -> tuple[str, float]:
    """A new one-time code for ``device_id`` and when it expires; the caller commits."""
    try:
        check_device_id(device_id)
    except PkiError as exc:
        raise CodeError(str(exc)) from None
    if not 0 < hours <= 24 * 30:
        raise CodeError("a code is valid for more than 0 and at most 720 hours")
    now = time.time()
    live = select(EnrolmentCodeRow.lookup).where(
        EnrolmentCodeRow.used_at.is_(None), EnrolmentCodeRow.expires_at > now
    )
    taken = set(session.scalars(live))
    code = new_code()
    while code[:4] in taken:  # the first group must name one live code
        code = new_code()
    lookup, secret = cast(tuple[str, str], normalise_code(code))
    row = EnrolmentCodeRow(
        lookup=lookup,
        secret_hash=_hasher.hash(secret),
        device_id=device_id,
        site=site[:200],
        created_by=actor[:64],
        created_at=now,
        expires_at=now + hours * 3600,
        failures=0,
    )
    session.add(row)
    session.flush()
    audit.record(session, actor, "enrol-code-created", device_id, code=lookup, hours=f"{hours:g}")
    return code, row.expires_at


def parse_hours(text: str) -> float:
    """``24h``, ``90m``, ``2d`` or a bare number of hours."""
    text = text.strip().lower()
    factor = {"h": 1.0, "m": 1 / 60, "d": 24.0}.get(text[-1:])
    number = text[:-1] if factor is not None else text
    try:
        return float(number) * (factor or 1.0)
    except ValueError:
        raise CodeError(f"{text!r} is not a duration such as 24h, 90m or 2d") from None


@dataclass
class Refusal(Exception):
    code: str
    status: int
    detail: str = ""


@dataclass
class AddressThrottle:
    """Wrong codes per client address in a sliding window (one EST worker holds it)."""

    limit: int
    window: float
    _seen: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked(self, address: str) -> bool:
        with self._lock:
            times = self._seen[address]
            while times and times[0] < time.monotonic() - self.window:
                times.popleft()
            return len(times) >= self.limit

    def failed(self, address: str) -> None:
        with self._lock:
            self._seen[address].append(time.monotonic())


@dataclass
class EnrolmentServer:
    config: DeviceConfig
    pki: KitPki
    engine: Any
    throttle: AddressThrottle


def server(app: Flask | None = None) -> EnrolmentServer:
    return cast(EnrolmentServer, (app or current_app).extensions[EXTENSION])


def _session() -> Session:
    if "enrol_db" not in g:
        g.enrol_db = Session(server().engine, expire_on_commit=False)
    return cast(Session, g.enrol_db)


def _address() -> str:
    return request.remote_addr or "unknown"


def _refuse(refusal: Refusal, device_id: str = "") -> Response:
    session = _session()
    session.rollback()
    audit.record(
        session,
        f"tablet@{_address()}",
        "enrol-refused",
        device_id,
        reason=refusal.code,
        detail=refusal.detail[:200],
    )
    session.commit()
    log.warning(
        "enrolment refused (%s) from %s for %s: %s",
        refusal.code,
        _address(),
        device_id or "unknown device",
        refusal.detail,
    )
    response = Response(f"{refusal.code}\n", status=refusal.status, mimetype="text/plain")
    response.headers[REFUSAL_HEADER] = refusal.code
    if refusal.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="fieldkit enrolment"'
    return response


def _code_row(session: Session, typed: str, now: float) -> EnrolmentCodeRow:
    """The code staff typed, checked: exists, right secret, unused, not expired."""
    est = server()
    if est.throttle.blocked(_address()):
        raise Refusal("too-many-attempts", 429, "address throttled")
    parts = normalise_code(typed)
    if parts is None:
        est.throttle.failed(_address())
        raise Refusal("bad-code", 401, "not a code")
    lookup, secret = parts
    rows = session.scalars(
        select(EnrolmentCodeRow)
        .where(EnrolmentCodeRow.lookup == lookup)
        .order_by(EnrolmentCodeRow.id.desc())
    ).all()
    for row in rows:
        try:
            _hasher.verify(row.secret_hash, secret)
        except (VerificationError, InvalidHashError):
            continue
        if row.used_at is not None:
            raise Refusal("code-used", 401, f"code {lookup} used")
        if row.failures >= est.config.enrol.code_failures:
            raise Refusal("too-many-attempts", 401, f"code {lookup} spent by wrong guesses")
        if row.expires_at <= now:
            raise Refusal("code-expired", 401, f"code {lookup} expired")
        return row
    est.throttle.failed(_address())
    # A wrong secret against a live code counts against that code, so it cannot be guessed
    # slowly from many addresses.
    for row in rows:
        if row.used_at is None and row.expires_at > now:
            session.execute(
                update(EnrolmentCodeRow)
                .where(EnrolmentCodeRow.id == row.id)
                .values(failures=EnrolmentCodeRow.failures + 1)
            )
            session.commit()
    raise Refusal("bad-code", 401, f"no code {lookup} with that secret")


def _basic_password() -> str:
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.password:
        raise Refusal("bad-code", 401, "no HTTP Basic credentials")
    return str(auth.password)


def _read_csr() -> x509.CertificateSigningRequest:
    if request.mimetype != "application/pkcs10":
        raise Refusal("bad-request", 415, "the body must be application/pkcs10")
    try:
        der = base64.b64decode(b"".join(request.get_data().split()), validate=True)
        return x509.load_der_x509_csr(der)
    except (ValueError, binascii.Error):
        raise Refusal("bad-request", 400, "the body is not a base64 DER PKCS#10 request") from None


bp = Blueprint("est", __name__)


@bp.get(CACERTS)
def cacerts() -> ResponseReturnValue:
    """RFC 7030 4.1: the CA certificates (the kit CA), base64 certs-only PKCS#7."""
    ca = x509.load_pem_x509_certificate(server().pki.ca_cert.read_bytes())
    body = base64.encodebytes(pkcs7.serialize_certificates([ca], serialization.Encoding.DER))
    response = Response(body, mimetype="application/pkcs7-mime")
    response.headers["Content-Type"] = PKCS7_CERTS
    response.headers["Content-Transfer-Encoding"] = "base64"
    return response


@bp.post(SIMPLEENROLL)
def simpleenroll() -> ResponseReturnValue:
    """RFC 7030 4.2.1: sign the tablet's request, authenticated by the one-time code."""
    session = _session()
    now = time.time()
    device_id = ""
    try:
        row = _code_row(session, _basic_password(), now)
        device_id = row.device_id
        pki = server().pki
        if pki.device_active(device_id):
            raise Refusal("device-active", 409, "revoke the device first")
        handed_out(server())  # before the code is spent: a site file that will not do refuses
        csr = _read_csr()
        try:
            signing_public = signing_key_of(csr)
            prior = prior_key_of(csr)
        except ProtocolError as exc:
            raise Refusal("bad-request", 400, str(exc)) from None
        # Spend the code first, in one statement: two tablets racing with it get one answer.
        spent = session.execute(
            update(EnrolmentCodeRow)
            .where(EnrolmentCodeRow.id == row.id, EnrolmentCodeRow.used_at.is_(None))
            .values(used_at=now)
        )
        if getattr(spent, "rowcount", 0) != 1:
            raise Refusal("code-used", 401, f"code {row.lookup} used")
        try:
            certificate = pki.issue_device(device_id, csr, signing_public, prior_signing=prior)
        except PkiError as exc:
            code = "device-active" if "revoke it first" in str(exc) else "bad-request"
            raise Refusal(code, 409 if code == "device-active" else 400, str(exc)) from None
    except Refusal as refusal:
        return _refuse(refusal, device_id)
    serial = f"{certificate.serial_number:x}"
    session.execute(
        update(EnrolmentCodeRow).where(EnrolmentCodeRow.id == row.id).values(serial=serial)
    )
    audit.record(
        session, f"tablet@{_address()}", "enrol-issued", device_id, code=row.lookup, serial=serial
    )
    session.commit()
    log.info("device %s enrolled from %s (serial %s)", device_id, _address(), serial)
    body = base64.encodebytes(
        pkcs7.serialize_certificates([certificate], serialization.Encoding.DER)
    )
    response = Response(body, mimetype="application/pkcs7-mime")
    response.headers["Content-Type"] = PKCS7_CERTS
    response.headers["Content-Transfer-Encoding"] = "base64"
    return response


@bp.post(DEVICE_CONFIG)
def device_config() -> ResponseReturnValue:
    """fieldkit's extension: the device config, operator roster and receivers' public keys,
    for the tablet just certified (its request signed with the signing key it registered)."""
    session = _session()
    device_id = ""
    try:
        try:
            ask = ConfigRequest.model_validate_json(request.get_data())
        except ValidationError:
            raise Refusal("bad-request", 400, "not a device-config request") from None
        device_id = ask.device_id
        est = server()
        entry = read_roster(est.pki.roster).get(device_id)
        if entry is None or entry.revoked or f"{entry.serial:x}" != ask.serial:
            raise Refusal("bad-request", 403, "not the device's current certificate")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(entry.signing_public).verify(
                base64.b64decode(ask.signature, validate=True),
                config_message(device_id, entry.serial),
            )
        except (InvalidSignature, ValueError, binascii.Error):
            raise Refusal("bad-request", 403, "the request is not signed by the device") from None
        code = session.scalars(
            select(EnrolmentCodeRow).where(
                EnrolmentCodeRow.device_id == device_id, EnrolmentCodeRow.serial == ask.serial
            )
        ).first()
        if code is None or code.used_at is None or time.time() - code.used_at > CONFIG_WINDOW:
            raise Refusal("bad-request", 403, "the enrolment is too old for its config")
        settings = device_settings(est, session, device_id, code.site)
    except Refusal as refusal:
        return _refuse(refusal, device_id)
    audit.record(session, f"tablet@{_address()}", "enrol-config-sent", device_id)
    session.commit()
    return Response(settings.model_dump_json(), mimetype="application/json")


def handed_out(est: EnrolmentServer) -> EnrolSection:
    """``[enrol]`` with the admin's site file laid over it; a broken file refuses enrolment
    (the log says what is wrong with it; the tablet is told the hub had an error)."""
    try:
        return site_enrol(est.config.enrol)
    except SiteError as exc:
        log.error("enrolment refused: %s", exc)
        raise Refusal("hub-error", 500, "the hub's site settings are unreadable") from None


def device_settings(
    est: EnrolmentServer, session: Session, device_id: str, site: str
) -> DeviceSettings:
    enrol = handed_out(est)
    current = tablet_roster(session, receivers=est.pki.receivers())
    roster = current.encode().decode() if current is not None else None
    return DeviceSettings(
        device_id=device_id,
        site=site,
        hub_host=enrol.broker_host or est.config.hub.server_name,
        hub_port=enrol.broker_port or est.config.hub.broker_port,
        antivirus_mirror=enrol.antivirus_mirror,
        application_hosts=enrol.application_hosts,
        receivers={code: pem.decode() for code, pem in est.pki.receivers().items()},
        # Read at every enrolment: a tablet enrolling again after a rotation gets the new key.
        downlink_key=est.pki.downlink_public_pem().decode(),
        operators=roster,
        network=enrol.site_network,
    )


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The EST server's app (no sessions, no cookies, no admin pages)."""
    app = Flask(__name__)
    config: DeviceConfig = (test_config or {}).get("FIELDKIT") or load_config()
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    if test_config is not None:
        app.config.from_mapping(test_config)
    if config.hub.migrate_on_start:
        upgrade(config.hub.database_url)
    pki = KitPki(config.hub.pki, signer=config.hub.ca_signer)
    # The public half goes to every tablet; a PKI made before issue 17 item 3 gets a key here.
    pki.ensure_downlink_key()
    app.extensions[EXTENSION] = EnrolmentServer(
        config=config,
        pki=pki,
        engine=make_engine(config.hub.database_url),
        throttle=AddressThrottle(
            config.enrol.address_failures, config.enrol.address_window_seconds
        ),
    )
    app.register_blueprint(bp)

    @app.teardown_appcontext
    def close_db(exc: BaseException | None) -> None:
        session = g.pop("enrol_db", None)
        if session is not None:
            session.close()

    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app
