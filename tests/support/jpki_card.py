"""A My Number Card (or another card) emulated on virtualsmartcard's VirtualICC, for tests.

Run by Debian's python3 (``python3-virtualsmartcard`` is a Debian package, not in the venv):

    python3 tests/support/jpki_card.py --port P --kind jpki --certificate cert.der --log apdus.log

It connects to the vpcd reader slot listening on 127.0.0.1:P; to pcscd that is a card placed
in the reader, and the process ending is the card taken out. It answers as the public JPKI-AP
specification says: SELECT of JPKI-AP by AID, SELECT of the user-authentication certificate EF
(00 0A) by file ID, READ BINARY at any offset. Every command is appended to ``--log`` (class,
instruction, P1, P2, data in hex) so a test can show what the reader asked for: never a
VERIFY (a PIN), never the card-face application.

Kinds: ``jpki`` (a My Number Card), ``other`` (a card without JPKI-AP: SELECT answers 6A82),
``mute`` (a card that answers every command 6F00). ``--remove-after N`` takes the card out
while the Nth READ BINARY is in flight (it is never answered).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import Cryptodome  # Debian's python3-pycryptodome
import Cryptodome.Cipher
import Cryptodome.Hash

# Debian installs virtualsmartcard outside the default path, and its crypto helpers import
# PyCrypto's names (``Crypto``), which Debian 12 ships as pycryptodome's ``Cryptodome``. The
# JPKI card below uses none of them, but the framework imports them at start.
sys.path.insert(0, "/usr/lib/python3/site-packages/virtualsmartcard")
sys.modules.setdefault("Crypto", Cryptodome)
sys.modules.setdefault("Crypto.Cipher", Cryptodome.Cipher)
sys.modules.setdefault("Crypto.Hash", Cryptodome.Hash)

from virtualsmartcard.VirtualSmartcard import Iso7816OS, SmartcardOS, VirtualICC  # noqa: E402

JPKI_AID = bytes.fromhex("D392F000260100000001")
USER_AUTH_CERT_EF = bytes.fromhex("000A")
OK = b"\x90\x00"
NOT_FOUND = b"\x6a\x82"
WRONG_PARAMETERS = b"\x6b\x00"
NOT_SUPPORTED = b"\x6d\x00"
NO_EF_SELECTED = b"\x69\x86"
NO_PRECISE_DIAGNOSIS = b"\x6f\x00"


class JpkiOS(SmartcardOS):  # type: ignore[misc]
    def __init__(self, kind: str, certificate: bytes, log: str, remove_after: int | None):
        self.kind = kind
        self.certificate = certificate
        self.log = log
        self.remove_after = remove_after
        self.reads = 0
        self.atr = Iso7816OS.makeATR(T=1, directConvention=True, TA1=0x13)
        self.reset()

    def getATR(self) -> bytes:
        return bytes(self.atr)

    def reset(self) -> None:
        self.jpki_selected = False
        self.ef_selected = False

    def powerUp(self) -> None:
        self.reset()

    def execute(self, msg: bytes) -> bytes:
        apdu = bytes(msg)
        with open(self.log, "a", encoding="ascii") as out:
            out.write(apdu[:4].hex() + " " + apdu[5 : 5 + apdu[4]].hex() + "\n" if len(apdu) > 5
                      else apdu[:4].hex() + "\n")  # fmt: skip
        if self.kind == "mute":
            return NO_PRECISE_DIAGNOSIS
        _cla, ins, p1, p2 = apdu[:4]
        if ins == 0xA4:
            return self.select(p1, p2, apdu[5 : 5 + apdu[4]] if len(apdu) > 5 else b"")
        if ins == 0xB0:
            return self.read_binary(p1 << 8 | p2, apdu[4] if len(apdu) == 5 else 0)
        return NOT_SUPPORTED

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        if p1 == 0x04 and data == JPKI_AID and self.kind == "jpki":
            self.jpki_selected, self.ef_selected = True, False
            return OK
        if p1 == 0x04:
            self.jpki_selected = self.ef_selected = False
            return NOT_FOUND
        if p1 == 0x02 and self.jpki_selected and data == USER_AUTH_CERT_EF:
            self.ef_selected = True
            return OK
        return NOT_FOUND

    def read_binary(self, offset: int, le: int) -> bytes:
        if not self.ef_selected:
            return NO_EF_SELECTED
        self.reads += 1
        if self.remove_after is not None and self.reads >= self.remove_after:
            logging.info("the card is taken out of the reader")
            os._exit(0)  # the socket closes unanswered: vpcd sees the card gone
        if offset > len(self.certificate):
            return WRONG_PARAMETERS
        return self.certificate[offset : offset + (le or 256)] + OK


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=["jpki", "other", "mute"], default="jpki")
    parser.add_argument("--certificate")
    parser.add_argument("--log", required=True)
    parser.add_argument("--remove-after", type=int)
    parser.add_argument("--ready", help="a file to write the time (Unix seconds) it connected")
    args = parser.parse_args()
    certificate = b""
    if args.certificate:
        with open(args.certificate, "rb") as der:
            certificate = der.read()
    icc = VirtualICC(None, "iso7816", "127.0.0.1", args.port, logginglevel=logging.WARNING)
    icc.os = JpkiOS(args.kind, certificate, args.log, args.remove_after)
    if args.ready:
        # The card is in the reader from here on: vpcd has its connection.
        with open(args.ready + ".tmp", "w", encoding="ascii") as ready:
            ready.write(repr(time.time()))
        os.replace(args.ready + ".tmp", args.ready)
    icc.run()


if __name__ == "__main__":
    main()
