"""``fieldkit pki …`` and ``fieldkit packet open``.

The PKI and packet commands run on the provisioning admin's or the municipality's machine,
which has no device config; they are marked ``standalone``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from fieldkit.messages import MessageError
from fieldkit.pki import (
    KitPki,
    PkiError,
    load_x25519_private,
    read_roster,
    write_private,
)
from fieldkit.sealing import SealedPacket, SealingError, open_packet


def _pki(args: argparse.Namespace) -> KitPki:
    return KitPki(args.dir)


def cmd_pki_init(args: argparse.Namespace) -> int:
    pki = _pki(args)
    pki.init(args.name)
    pki.issue_hub(dns=tuple(args.dns), ips=tuple(args.ip))
    print(f"kit CA and hub certificates in {pki.root}")
    return 0


def cmd_pki_receiver(args: argparse.Namespace) -> int:
    directory = _pki(args).create_receiver(args.municipality)
    print(f"receiver key for {args.municipality} in {directory} (give private.key to the holder)")
    return 0


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    serial = _pki(args).revoke(args.device)
    print(f"revoked {args.device} (serial {serial:x}); restart the hub broker to load the CRL")
    return 0


def cmd_pki_list(args: argparse.Namespace) -> int:
    for name, entry in sorted(read_roster(_pki(args).roster).items()):
        print(f"{name:24} {entry.serial:x} {'REVOKED' if entry.revoked else 'active'}")
    return 0


def cmd_packet_open(args: argparse.Namespace) -> int:
    """Open a sealed packet offline with the receiver's private key (municipality)."""
    try:
        packet = SealedPacket.model_validate_json(args.packet.read_bytes())
    except ValueError:
        raise SealingError(f"{args.packet} is not a sealed packet") from None
    device_key = None
    if args.device_key:
        device_key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(args.device_key))
    elif args.roster:
        entry = read_roster(args.roster).get(packet.device_id)
        if entry is None:
            raise SealingError(f"device {packet.device_id} is not in {args.roster}")
        device_key = ed25519.Ed25519PublicKey.from_public_bytes(entry.signing_public)
    plaintext = open_packet(packet, load_x25519_private(args.key), device_key)
    if args.out:
        write_private(args.out, plaintext)
    else:
        sys.stdout.buffer.write(plaintext)
        sys.stdout.flush()
    state = "signature verified" if device_key else "SIGNATURE NOT CHECKED"
    print(f"packet {packet.record_id} from {packet.device_id}: {state}", file=sys.stderr)
    return 0


def standalone(func: Any) -> Any:
    """Run without a device config; report our own errors the way ``main`` does."""

    def run(args: argparse.Namespace) -> int:
        try:
            result: int = func(args)
            return result
        except (PkiError, SealingError, MessageError, OSError) as exc:
            print(f"fieldkit: {exc}", file=sys.stderr)
            return 1

    return run


def add_commands(sub: Any, add_pki_code: Any = None) -> None:
    """Add the PKI and packet subcommands to the ``fieldkit`` parser; ``add_pki_code`` adds
    ``pki code`` (the hub's one-time enrolment codes live in the hub database)."""
    pki = sub.add_parser("pki", help="kit CA, hub and device certificates, receiver keys")
    pki.add_argument("--dir", type=Path, default=Path("/etc/fieldkit/pki"), help="PKI directory")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="create the kit CA and the hub's certificates")
    init.add_argument("--name", default="fieldkit kit CA")
    init.add_argument("--dns", action="append", default=None)
    init.add_argument("--ip", action="append", default=None)
    init.set_defaults(standalone=standalone(_with_defaults(cmd_pki_init)))
    receiver = pki_sub.add_parser("receiver", help="create a municipality's sealing key pair")
    receiver.add_argument("municipality", help="6-digit local-government code")
    receiver.set_defaults(standalone=standalone(cmd_pki_receiver))
    if add_pki_code is not None:
        add_pki_code(pki_sub)
    revoke = pki_sub.add_parser("revoke", help="revoke a device (CRL + roster)")
    revoke.add_argument("device")
    revoke.set_defaults(standalone=standalone(cmd_pki_revoke))
    pki_sub.add_parser("list", help="enrolled devices").set_defaults(
        standalone=standalone(cmd_pki_list)
    )

    packet = sub.add_parser("packet", help="sealed application packets").add_subparsers(
        dest="packet_command", required=True
    )
    opener = packet.add_parser("open", help="open a sealed packet with the receiver's key")
    opener.add_argument("packet", type=Path, help="sealed packet JSON")
    opener.add_argument("--key", type=Path, required=True, help="receiver private.key")
    opener.add_argument("--roster", type=Path, help="roster.json to verify the device signature")
    opener.add_argument("--device-key", help="device signing public key, base64")
    opener.add_argument("--out", type=Path, help="write the plaintext here (mode 0600)")
    opener.set_defaults(standalone=standalone(cmd_packet_open))


def _with_defaults(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        args.dns = args.dns or ["localhost"]
        args.ip = args.ip or ["127.0.0.1"]
        result: int = func(args)
        return result

    return run
