"""Enrolment where the tablet and the kit CA share one machine (``./dev.sh run``, the test
kits): the same steps as over EST — keys made on the tablet side, a PKCS#10 request with the
signing key's proof, ``KitPki.issue_device``, the atomic install — without the network hop
and without a code. Never on a fielded tablet: it needs the CA key."""

from __future__ import annotations

from pathlib import Path

from fieldkit.enrolment.device import DeviceKeys, install
from fieldkit.enrolment.protocol import DeviceSettings, signing_key_of
from fieldkit.pki import KitPki


def enrol_locally(
    pki: KitPki,
    device_id: str,
    target: Path,
    *,
    hub_host: str = "localhost",
    hub_port: int = 8883,
    site: str = "",
    device_config: bool = False,
) -> Path:
    """Enrol ``device_id`` into ``target`` with the local kit CA; returns ``target``."""
    pki.ensure_downlink_key()  # a PKI made before the hub signed its downlink
    keys = DeviceKeys.generate()
    request = keys.request()
    certificate = pki.issue_device(device_id, request, signing_key_of(request))
    settings = DeviceSettings(
        device_id=device_id,
        site=site,
        hub_host=hub_host,
        hub_port=hub_port,
        receivers={code: pem.decode() for code, pem in pki.receivers().items()},
        downlink_key=pki.downlink_public_pem().decode(),
    )
    return install(target, keys, certificate, pki.ca_cert, settings, device_config=device_config)
