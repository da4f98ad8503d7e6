"""The kit CA key in a signer process of its own (issue 17 item 2). R16

The hub's services run here in a mount namespace in which ``ca/ca.key`` reads as empty
(``/dev/null`` bound over it): the key is out of their reach as it is for the hub image's
services, which run as a user that cannot read it. Through the signer they still enrol a
tablet, revoke it and sign the CRL; without the signer the same processes cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from fieldkit.config import load_config
from fieldkit.pki import KitPki, raw_public, read_roster
from fieldkit.wipe.record import load_device_key
from tests.enrolkit import FIELDKIT, add_hub_operator, make_tablet, start_hub
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="hiding the CA key needs a mount namespace (root, unshare)",
)


def without_the_ca_key(pki: KitPki) -> tuple[str, ...]:
    """A command prefix: run in a mount namespace where the CA key file is empty."""
    script = f'mount --bind /dev/null "{pki.ca_key}" && exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")


@pytest.fixture
def signer(pki: KitPki, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """`fieldkit pki signer` on a socket; yields (socket, its log file)."""
    sock, log = tmp_path / "signer" / "ca.sock", tmp_path / "signer.log"
    sock.parent.mkdir()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*FIELDKIT, "pki", "--dir", str(pki.root), "signer", "--socket", str(sock)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(sock.exists, 60, "the signer's socket")
        yield sock, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0, log.read_text()[-2000:]
    assert not sock.exists()  # removed at stop
    assert "PRIVATE KEY" not in log.read_text()


def test_the_socket_is_not_open_to_everyone(signer: tuple[Path, Path]) -> None:
    sock, _ = signer
    assert sock.stat().st_mode & 0o777 == 0o660


def test_a_hub_without_the_ca_key_enrols_and_revokes_through_the_signer(
    pki: KitPki, signer: tuple[Path, Path], tmp_path: Path, sqlite_url: str
) -> None:
    """The EST server and `fieldkit pki revoke` with no CA key in reach: a tablet enrols
    (certificate from the kit CA), is revoked (its serial on a CRL the CA signed); the signer
    logs each signature with the asking process's uid, never a key."""
    sock, log = signer
    hidden = without_the_ca_key(pki)
    tablet = make_tablet(tmp_path / "tablet", pki.ca_cert)
    # The wipe signed before enrolment: its key is named and registered through the signer.
    prior = load_device_key(load_config(tablet.config).wipe.device_key)
    with start_hub(
        tmp_path / "hub", pki, sqlite_url, wrap=hidden, hub_settings={"ca_signer": f'"{sock}"'}
    ) as hub:
        add_hub_operator(sqlite_url)  # the hub made its tables at start
        run = tablet.enrol(hub.address, hub.code("tab-s"))
        assert run.returncode == 0, run.stderr
    assert read_roster(pki.roster)["tab-s"].earlier_signing == (raw_public(prior.public_key()),)
    cert = x509.load_pem_x509_certificate((tablet.enrolment / "client.crt").read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()))
    assert cert.subject.rfc4514_string() == "CN=tab-s"
    through_signer = ("pki", "--dir", str(pki.root), "--signer", str(sock))
    revoke = subprocess.run(
        [*hidden, *FIELDKIT, *through_signer, "revoke", "tab-s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stderr
    assert cert.serial_number in pki.revoked_serials()
    logged = log.read_text()
    assert "issued a certificate for tab-s" in logged and "revoked tab-s" in logged
    assert f"for uid {os.geteuid()}" in logged


def test_without_the_signer_the_same_hub_cannot_sign(
    pki: KitPki, tmp_path: Path, sqlite_url: str
) -> None:
    """The other way: in the same namespace, with no signer configured, enrolment is refused
    and revoking fails — so what signed above was the signer, not a key within reach."""
    hidden = without_the_ca_key(pki)
    tablet = make_tablet(tmp_path / "tablet", pki.ca_cert)
    with start_hub(tmp_path / "hub", pki, sqlite_url, wrap=hidden) as hub:
        run = tablet.enrol(hub.address, hub.code("tab-t"))
    assert run.returncode != 0
    assert tablet.untouched()
    revoke = subprocess.run(
        [*hidden, *FIELDKIT, "pki", "--dir", str(pki.root), "revoke", "tab-b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode != 0


def ask(sock: Path, payload: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(sock))
        conn.sendall(payload)
        answer: dict[str, object] = json.loads(conn.makefile("rb").readline())
        return answer


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"op": "export-key"}\n', "unknown operation 'export-key'"),
        (b'{"op": "issue-device", "device": "tab-x"}\n', "csr: a non-empty string"),
        (b'{"op": "issue-device", "device": "tab-x", "csr": "x", "signing_public": "!"}\n',
         "not readable"),
        (b'{"op": "revoke", "device": "nobody-here"}\n', "not enrolled"),
        (b'{"op": "write-crl", "valid_days": 10000}\n', "at most 366"),
        (b"x" * (70 * 1024) + b"\n", "longer than"),
    ],
)  # fmt: skip
def test_a_bad_request_is_refused_with_what_was_wrong_and_the_signer_stays_up(
    signer: tuple[Path, Path], payload: bytes, says: str
) -> None:
    sock, _ = signer
    answer = ask(sock, payload)
    assert says in str(answer.get("error")), answer
    assert ask(sock, b'{"op": "ping"}\n') == {"ok": {}}


def test_the_crl_is_renewed_through_the_signer(pki: KitPki, signer: tuple[Path, Path]) -> None:
    """The hub broker's daily renewal asks the signer (a margin longer than the CRL's life
    makes it due now)."""
    import datetime as dt

    sock, _ = signer
    before = pki.crl_next_update()
    client = KitPki(pki.root, signer=sock)
    assert client.renew_crl_if_due(dt.timedelta(days=400)) is True
    after = pki.crl_next_update()
    assert before is not None and after is not None and after >= before
    assert client.renew_crl_if_due(dt.timedelta(seconds=0)) is False
