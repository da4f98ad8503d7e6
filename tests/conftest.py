"""Fixtures that start real parts: a mosquitto broker on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fieldkit.broker import LocalBroker, free_loopback_port
from fieldkit.bus import Bus, Endpoint, read_password
from fieldkit.config import DeviceConfig, load_config
from fieldkit.registry import Identity, identities_for, load_specs

# Clients that are not services. The tester sends requests the way a service would; the
# intruder owns nothing but its own namespace, to show what the ACL lets through.
TESTER = Identity(
    name="tester",
    writes=("tester/req/#",),
    reads=("+/rep/tester", "+/error", "health/#"),
)
INTRUDER = Identity(name="intruder", writes=("intruder/#",), reads=("intruder/#",))


def write_config(directory: Path, body: str = "") -> Path:
    path = directory / "device.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [device]
            id = "test-tablet-01"
            role = "tablet"

            [bus]
            port = 0
            runtime_dir = "{directory / "run"}"

            [kiosk]
            listen_port = {free_loopback_port()}

            [runner]
            backoff_initial = 0.2
            backoff_max = 1.0
            stop_timeout = 5.0
            """
        )
        + textwrap.dedent(body)
    )
    return path


@pytest.fixture
def kit_config(tmp_path: Path) -> DeviceConfig:
    return load_config(write_config(tmp_path))


@pytest.fixture
def broker(kit_config: DeviceConfig) -> Iterator[LocalBroker]:
    """A real mosquitto with every registered service's identity, plus an intruder."""
    identities = [*identities_for(load_specs()), TESTER, INTRUDER]
    runtime = kit_config.bus.runtime_dir
    runtime.mkdir(parents=True)
    with LocalBroker(runtime, identities, Endpoint(port=0)) as running:
        yield running


BusFactory = Callable[..., Bus]


@pytest.fixture
def make_bus(broker: LocalBroker) -> Iterator[BusFactory]:
    """Connected buses for named identities; all closed at the end of the test."""
    opened: list[Bus] = []

    def make(identity: str, *, connect: bool = True, announce_health: bool = False) -> Bus:
        bus = Bus(
            identity,
            broker.endpoint,
            read_password(broker.runtime_dir, identity),
            announce_health=announce_health,
        )
        if connect:
            bus.connect()
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        with contextlib.suppress(Exception):  # best-effort teardown
            bus.close()


def raw_client(broker: LocalBroker, identity: str | None, password: str | None = None) -> Any:
    """A bare paho client, for payloads a typed Bus would never send."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if identity is not None:
        client.username_pw_set(
            identity,
            password if password is not None else read_password(broker.runtime_dir, identity),
        )
    return client


OPERATOR_PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def operator_hash() -> str:
    """An argon2id hash for the test operators (hashing is slow: once per run)."""
    from fieldkit.kiosk.operators import hash_password

    return hash_password(OPERATOR_PASSWORD)


# Fixture modules, loaded as plugins (not imported here: helpers such as tests.wipe_fixtures
# import this module, and the bench imports them outside pytest):
pytest_plugins = [
    # A real cupsd with a queue on ippeveprinter, for any test that prints.
    "tests.cups",
    # The kiosk on a real kit (capture, printing, sync, wipe, antivirus).
    "tests.kiosk_kit",
    # Sync and hub fixtures (PKI, mutual-TLS hub broker, SQLite/PostgreSQL hub database).
    "tests.hubkit",
    # The hub's EST enrolment server and fresh tablets (enrolment with a one-time code).
    "tests.enrolkit",
    # Hub web app fixtures (an app on the hub database, accounts of each role, counts).
    "tests.hubweb",
    # The Playwright browser on Debian's Chromium (``browser``).
    "tests.support.browser",
    # A private pcscd with the virtual card reader, and the card service (``virtual_reader``).
    "tests.card_fixtures",
]


# The slow image tests (tests/test_image*.py): one tablet image per run, built once.


IMAGE_BUILD_ROOT = Path("/var/tmp/fieldkit-build")
# The test kit's PKI: its CA is baked into the test image (as `--kit-ca` bakes a prefecture's),
# so the field test's hub on the host can enrol the booted tablet. Made once, kept.
FIELD_PKI = IMAGE_BUILD_ROOT / "field-pki"
# Where the VM reaches the hub (tests/support/field_boot.py): on the hub's certificate.
FIELD_HUB_ADDRESS = "10.0.2.100"


def field_pki() -> Any:
    from fieldkit.pki import KitPki

    pki = KitPki(FIELD_PKI)
    if not pki.ca_cert.exists():
        pki.init("fieldkit test kit CA")
        pki.issue_hub(dns=("localhost",), ips=("127.0.0.1", FIELD_HUB_ADDRESS))
    return pki


@pytest.fixture(scope="session")
def tablet_image_dir() -> Path:
    """FIELDKIT_IMAGE_DIR's build, or a fresh ``fieldkit image build tablet`` (minutes)."""
    given = os.environ.get("FIELDKIT_IMAGE_DIR")
    if given:
        return Path(given)
    from fieldkit.provision.image import BuildOptions, ImageBuild

    out = IMAGE_BUILD_ROOT / "test-tablet"
    options = BuildOptions(
        role="tablet", out=out, cache=IMAGE_BUILD_ROOT / "cache", kit_ca=field_pki().ca_cert
    )
    ImageBuild(options).run()
    return out


@pytest.fixture(scope="session")
def hub_image_dir() -> Path:
    """FIELDKIT_HUB_IMAGE_DIR's build, or a fresh ``fieldkit image build hub`` (minutes)."""
    given = os.environ.get("FIELDKIT_HUB_IMAGE_DIR")
    if given:
        return Path(given)
    from fieldkit.provision.image import BuildOptions, ImageBuild
    from tests.support.hub_image import admin_files

    out = IMAGE_BUILD_ROOT / "test-hub"
    keys, password_hash = admin_files(IMAGE_BUILD_ROOT / "hub-admin")
    options = BuildOptions(
        role="hub",
        out=out,
        cache=IMAGE_BUILD_ROOT / "cache",
        admin_keys=keys,
        admin_password_hash=password_hash,
    )
    ImageBuild(options).run()
    return out
