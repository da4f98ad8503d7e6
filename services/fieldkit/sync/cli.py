"""``fieldkit pki …`` and ``fieldkit packet keygen|open``.

The PKI and packet commands run on the provisioning admin's or the municipality's machine,
which has no device config; they are marked ``standalone``. ``packet keygen`` and
``packet open`` are the municipality's: its private key is made and used on its own machine,
and the contractor only ever imports the public key (``pki receiver import``).
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from fieldkit.messages import MessageError
from fieldkit.pki import KitPki, PkiError, read_roster, write_private
from fieldkit.sealing import SealedPacket, SealingError, open_packet, receipt_for_bundle
from fieldkit.sealing_keys import SealingKeyError, generate, load_private, read_passphrase


def _pki(args: argparse.Namespace) -> KitPki:
    return KitPki(args.dir, signer=args.signer)


def cmd_pki_signer(args: argparse.Namespace) -> int:
    """Run the CA signer: the only process that reads the CA key (issue 17 item 2)."""
    import threading

    from fieldkit.casigner import serve
    from fieldkit.runner import install_stop_signals
    from fieldkit.watchdog import notify

    stop = threading.Event()
    install_stop_signals(stop)
    try:
        serve(
            args.dir,
            args.socket,
            stop,
            mode=int(args.mode, 8),
            ready=lambda: notify("READY=1", "STATUS=signing for the hub's services"),
        )
    except PermissionError as exc:
        print(f"fieldkit: the CA signer cannot read the CA: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError:
        print(f"fieldkit: no kit CA in {args.dir}; run `fieldkit pki init` first", file=sys.stderr)
        return 2
    return 0


def cmd_pki_init(args: argparse.Namespace) -> int:
    pki = _pki(args)
    pki.init(args.name)
    pki.issue_hub(dns=tuple(args.dns), ips=tuple(args.ip))
    print(f"kit CA and hub certificates in {pki.root}")
    return 0


RECEIVER_USAGE = "fieldkit pki receiver import CODE PUBLIC.pem --fingerprint FINGERPRINT"
NEW_FLOW = (
    "the contractor no longer makes a municipality's sealing key: the municipality runs "
    "`fieldkit packet keygen --out DIR` on its own machine and gives you sealing-public.pem, "
    "and its fingerprint over another channel (telephone, in person); then run "
    f"`{RECEIVER_USAGE}`"
)


def cmd_pki_receiver(args: argparse.Namespace) -> int:
    """``pki receiver import CODE PUBLIC --fingerprint FP``; any other use points at it."""
    if args.action != "import" or len(args.rest) != 2 or not args.fingerprint:
        print(f"fieldkit: {NEW_FLOW}", file=sys.stderr)
        return 2
    code, public = args.rest
    fingerprint = _pki(args).import_receiver(code, Path(public).read_bytes(), args.fingerprint)
    print(f"sealing key for {code} imported; fingerprint {fingerprint}")
    return 0


def _passphrase(args: argparse.Namespace, *, twice: bool) -> bytes:
    """From ``--passphrase-file`` (first line) or a prompt; never from the command line."""
    return read_passphrase(args.passphrase_file, twice=twice)


def cmd_packet_keygen(args: argparse.Namespace) -> int:
    """The municipality's key pair, made on its own machine; the private key encrypted."""
    made = generate(args.out, _passphrase(args, twice=True))
    print(f"private key (encrypted, keep it here): {made.private}")
    print(f"public key (give it to the contractor): {made.public}")
    print(f"fingerprint (tell the contractor by telephone or in person): {made.fingerprint}")
    return 0


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    serial = _pki(args).revoke(args.device)
    print(f"revoked {args.device} (serial {serial:x}); restart the hub broker to load the CRL")
    return 0


def cmd_pki_downlink_key(args: argparse.Namespace) -> int:
    """Show (or rotate) the key the hub signs acks and rosters with; tablets pin it."""
    pki = _pki(args)
    if args.rotate:
        fingerprint = pki.rotate_downlink_key()
        print(f"hub downlink key rotated: {fingerprint}")
        print("every tablet refuses the hub's acks and rosters until it enrols again")
        return 0
    if pki.ensure_downlink_key():
        print("hub downlink key made")
    print(f"hub downlink key {pki.downlink_fingerprint()} ({pki.downlink_public})")
    return 0


def cmd_pki_evidence_signer(args: argparse.Namespace) -> int:
    """A new deletion-evidence key, certified by the kit CA for document signing only."""
    pki = _pki(args)
    cert = pki.issue_evidence_signer(args.hub_name)
    print(f"deletion-evidence signer certified: {cert.subject.rfc4514_string()}")
    print(f"serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    print(f"key {pki.evidence_key} (0600), certificate {pki.evidence_cert}")
    print("documents signed before keep their own certificate and still verify")
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
    plaintext = open_packet(packet, _receiver_key(args), device_key)
    if args.out:
        write_private(args.out, plaintext)
    else:
        sys.stdout.buffer.write(plaintext)
        sys.stdout.flush()
    state = "signature verified" if device_key else "SIGNATURE NOT CHECKED"
    print(f"packet {packet.record_id} from {packet.device_id}: {state}", file=sys.stderr)
    return 0


def _receiver_key(args: argparse.Namespace) -> Any:
    passphrase = None
    if b"ENCRYPTED" in args.key.read_bytes():
        passphrase = _passphrase(args, twice=False)
    return load_private(args.key, passphrase)


def cmd_packet_receipt(args: argparse.Namespace) -> int:
    """Open every packet of a pick-up bundle and write the receipt the hub asks for: the
    bundle's hash and the token sealed in each packet (proof that it was decrypted)."""
    device_keys = None
    if args.roster:
        device_keys = {
            name: ed25519.Ed25519PublicKey.from_public_bytes(entry.signing_public)
            for name, entry in read_roster(args.roster).items()
        }
    receipt = receipt_for_bundle(args.bundle.read_bytes(), _receiver_key(args), device_keys)
    write_private(args.out, receipt.model_dump_json(indent=1).encode())
    state = "signatures verified" if device_keys else "SIGNATURES NOT CHECKED"
    print(f"receipt for {len(receipt.tokens)} packets in {args.out} ({state}); upload it")
    return 0


def standalone(func: Any) -> Any:
    """Run without a device config; report our own errors the way ``main`` does."""

    def run(args: argparse.Namespace) -> int:
        try:
            result: int = func(args)
            return result
        except (PkiError, SealingError, SealingKeyError, MessageError, OSError) as exc:
            print(f"fieldkit: {exc}", file=sys.stderr)
            return 1

    return run


def add_commands(sub: Any, add_pki_code: Any = None) -> None:
    """Add the PKI and packet subcommands to the ``fieldkit`` parser; ``add_pki_code`` adds
    ``pki code`` (the hub's one-time enrolment codes live in the hub database)."""
    pki = sub.add_parser("pki", help="kit CA, hub and device certificates, receiver keys")
    pki.add_argument("--dir", type=Path, default=Path("/etc/fieldkit/pki"), help="PKI directory")
    pki.add_argument(
        "--signer",
        type=Path,
        default=None,
        help="the CA signer's socket: revoke through it (the CA key is the signer's alone)",
    )
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="create the kit CA and the hub's certificates")
    init.add_argument("--name", default="fieldkit kit CA")
    init.add_argument("--dns", action="append", default=None)
    init.add_argument("--ip", action="append", default=None)
    init.set_defaults(standalone=standalone(_with_defaults(cmd_pki_init)))
    receiver = pki_sub.add_parser(
        "receiver",
        help="import a municipality's public sealing key (it makes the pair itself)",
        usage=RECEIVER_USAGE,
    )
    receiver.add_argument("action", help="import")
    receiver.add_argument("rest", nargs="*", help="CODE PUBLIC.pem")
    receiver.add_argument(
        "--fingerprint", default="", help="as the municipality read it out (spaces allowed)"
    )
    receiver.set_defaults(standalone=standalone(cmd_pki_receiver))
    if add_pki_code is not None:
        add_pki_code(pki_sub)
    revoke = pki_sub.add_parser("revoke", help="revoke a device (CRL + roster)")
    revoke.add_argument("device")
    revoke.set_defaults(standalone=standalone(cmd_pki_revoke))
    downlink = pki_sub.add_parser(
        "downlink-key", help="the key the hub signs acks and rosters with (tablets pin it)"
    )
    downlink.add_argument(
        "--rotate", action="store_true", help="replace it (every tablet must enrol again)"
    )
    downlink.set_defaults(standalone=standalone(cmd_pki_downlink_key))
    evidence = pki_sub.add_parser(
        "evidence-signer",
        help="a new key for the deletion-evidence documents, certified by the kit CA",
    )
    evidence.add_argument("--hub-name", default="fieldkit hub", help="named in its certificate")
    evidence.set_defaults(standalone=standalone(cmd_pki_evidence_signer))
    signer = pki_sub.add_parser(
        "signer", help="serve the CA key to the hub's services over a Unix socket, until stopped"
    )
    signer.add_argument("--socket", type=Path, required=True, help="where to listen")
    signer.add_argument(
        "--mode", default="660", help="the socket's mode (octal; who may ask: user and group)"
    )
    signer.set_defaults(standalone=standalone(cmd_pki_signer))
    pki_sub.add_parser("list", help="enrolled devices").set_defaults(
        standalone=standalone(cmd_pki_list)
    )

    packet = sub.add_parser("packet", help="sealed application packets").add_subparsers(
        dest="packet_command", required=True
    )
    # No abbreviations: ``--passphrase SECRET`` must not pass as ``--passphrase-file``.
    keygen = packet.add_parser(
        "keygen",
        help="the municipality's sealing key pair (run on the municipality's machine)",
        allow_abbrev=False,
    )
    keygen.add_argument("--out", type=Path, required=True, help="folder for the two key files")
    keygen.add_argument(
        "--passphrase-file", type=Path, help="first line is the passphrase (default: prompt)"
    )
    keygen.set_defaults(standalone=standalone(cmd_packet_keygen))
    opener = packet.add_parser(
        "open", help="open a sealed packet with the receiver's key", allow_abbrev=False
    )
    opener.add_argument("packet", type=Path, help="sealed packet JSON")
    opener.add_argument("--key", type=Path, required=True, help="sealing-private.pem")
    opener.add_argument(
        "--passphrase-file", type=Path, help="first line is the key's passphrase (default: prompt)"
    )
    opener.add_argument("--roster", type=Path, help="roster.json to verify the device signature")
    opener.add_argument("--device-key", help="device signing public key, base64")
    opener.add_argument("--out", type=Path, help="write the plaintext here (mode 0600)")
    opener.set_defaults(standalone=standalone(cmd_packet_open))
    receipt = packet.add_parser(
        "receipt",
        help="decrypt a pick-up bundle and write the receipt that confirms it on the hub",
        allow_abbrev=False,
    )
    receipt.add_argument("bundle", type=Path, help="packets-N.zip from the hub")
    receipt.add_argument("--key", type=Path, required=True, help="sealing-private.pem")
    receipt.add_argument("--passphrase-file", type=Path, help="default: prompt")
    receipt.add_argument("--roster", type=Path, help="roster.json to verify device signatures")
    receipt.add_argument("--out", type=Path, required=True, help="receipt.json to upload")
    receipt.set_defaults(standalone=standalone(cmd_packet_receipt))


def _with_defaults(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        args.dns = args.dns or ["localhost"]
        args.ip = args.ip or ["127.0.0.1"]
        result: int = func(args)
        return result

    return run
