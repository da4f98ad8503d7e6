"""``fieldkit wipe ...``: catalogue scans, the evidence chain, contract-end sanitization.

The ``fieldkit`` command is the same on the hub, which verifies records and certificates but
has no scanning libraries (Hyperscan: the ``tablet`` extra): the scanning commands import them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fieldkit.policies import INSTALLED_POLICY_DIR
from fieldkit.wipe.record import (
    EVIDENCE_FILE,
    GENESIS,
    ChainSummary,
    ErasureRecord,
    EvidenceStore,
    follow_chain,
    load_device_key,
    parse_records,
    public_hex,
    signing_key_path,
    verify_chain,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fieldkit.config import DeviceConfig


def print_record(record: ErasureRecord) -> None:
    print(
        f"{record.kind} record {record.record_id} on {record.device}: "
        f"{'OK' if record.ok else 'FAILED'}"
    )
    for holder in record.holders:
        state = "ok" if holder.ok else ("no answer" if not holder.answered else holder.problem)
        print(f"  holder   {holder.service:20} {state}")
    for location in record.locations:
        mark = "FAIL" if location.fails else "ok  "
        detail = f"{location.scanned_files} files, {location.scanned_bytes} bytes"
        if location.erased:
            detail += f", {location.erased} erased"
        if location.note:
            detail += f"; {location.note}"
        print(f"  {mark} {location.name:20} {location.status:12} {detail}")
        named = location.holders or {}
        for where, count in named.items():
            print(f"         {count} found in {where}")
        if location.holder_count and location.holder_count > len(named):
            print(f"         and {location.holder_count - len(named)} places more")
        for finding in location.findings:
            print(f"         {finding.kind} in {finding.where} at {finding.offset}")
    for failure in record.failures:
        print(f"  failure: {failure}")


def cmd_scan(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.wipe.service import Wiper

    # Signed with the enrolled key like every other record of this tablet, never a new one.
    wiper = Wiper(config.wipe, config.device.id, key_path=signing_key_path(config))
    try:
        record = wiper.scan_catalogue()
    finally:
        wiper.close()
    if args.json:
        print(record.model_dump_json(indent=2))
    else:
        print_record(record)
    return 0 if record.ok else 1


def cmd_catalogue(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.wipe.catalogue import Catalogue

    for location in Catalogue.from_settings(config.wipe).locations:
        roots = ", ".join(str(r) for r in location.roots) or "/proc/<pid>/mem"
        print(f"{location.name:20} erase: {location.erase:15} {roots}")
    return 0


def cmd_verify_chain(args: argparse.Namespace, config: DeviceConfig) -> int:
    path = args.store or config.wipe.state_dir / EVIDENCE_FILE
    if not path.exists():
        print(f"fieldkit: no evidence store at {path}", file=sys.stderr)
        return 2
    store = EvidenceStore(path)
    try:
        records = store.records()
    finally:
        store.close()
    trusted = args.public_key or public_hex(load_device_key(signing_key_path(config)))
    problems = verify_chain(records, trusted)
    for problem in problems:
        print(f"record {problem.seq} ({problem.record_id}): {problem.problem}")
    failed = sum(1 for _, r in records if not r.ok)
    print(
        f"{len(records)} records, chain {'intact' if not problems else 'BROKEN'}, "
        f"{failed} records say the erasure failed"
    )
    return 1 if problems else 0


def cmd_records(args: argparse.Namespace, config: DeviceConfig) -> int:
    store = EvidenceStore(config.wipe.state_dir / EVIDENCE_FILE)
    try:
        records = store.records()
        for seq, record in records if args.all else records[-args.last :]:
            print(json.dumps({"seq": seq, **record.model_dump(mode="json")}))
    finally:
        store.close()
    return 0


def cmd_device(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.datavol import CERTIFICATE_DIR
    from fieldkit.policies import ErasurePolicy, PolicyError, load_policy
    from fieldkit.wipe.certificate_pdf import write_certificate_pdf
    from fieldkit.wipe.datavol import TabletVolume, find_volume, release, stop_services
    from fieldkit.wipe.sanitize import EvidenceChain, Person, SanitizeError, sanitize

    # No TARGET: the device's own encrypted data volume (a tablet), found through the
    # installed erasure policy and /etc/crypttab. A TARGET (a disk image or block device, e.g.
    # on the development kit, which has no data volume) is purged as given.
    volume: TabletVolume | None = None
    if args.target is None:
        try:
            policy = load_policy(args.policies / "erasure.yaml", ErasurePolicy)
            volume = find_volume(policy.data_volume, args.crypttab)
        except (PolicyError, SanitizeError) as exc:
            print(
                f"fieldkit: no TARGET given, and no data volume to purge: {exc}. Give the "
                "disk image or block device to sanitize.",
                file=sys.stderr,
            )
            return 2
    what = args.target if volume is None else f"the encrypted data volume {volume.partition}"
    if not args.yes:
        print(
            f"fieldkit: this destroys every byte of {what}; add --yes to go ahead", file=sys.stderr
        )
        return 2
    steps: list[str] = []
    if volume is not None and not os.path.ismount(str(volume.policy.mount)):
        print(
            f"fieldkit: the data volume is not open at {volume.policy.mount}: the device's "
            "signing key and its erasure records are on it. Nothing was touched.",
            file=sys.stderr,
        )
        return 1
    if volume is not None:
        # Nothing may write a record or a file once the chain is read below.
        try:
            steps.append(stop_services(config.wipe.stop_services or kit_units(config)))
        except SanitizeError as exc:
            print(f"fieldkit: {exc}", file=sys.stderr)
            return 1
        if not os.path.ismount(str(volume.policy.mount)):
            print(f"fieldkit: stopping the services closed {volume.policy.mount}", file=sys.stderr)
            return 1
    # The certificate closes the device's erasure-record chain: read it before the target
    # goes, and only once every record is on its way to the hub (after this, nothing can
    # send the rest). The kit's services should be stopped, so no record follows.
    store_path = config.wipe.state_dir / EVIDENCE_FILE
    if not store_path.exists() and not args.no_records:
        print(
            f"fieldkit: no erasure records at {store_path}; if this device has none, "
            "add --no-records",
            file=sys.stderr,
        )
        return 2
    unsent = records_not_sent(config)
    if unsent and not args.force:
        print(
            f"fieldkit: {unsent}; start the kit until they reach the hub "
            "(fieldkit wipe records, sync status), or add --force to certify without them",
            file=sys.stderr,
        )
        return 2
    # The key and the chain are read into memory now: on a tablet both are on the volume.
    key = load_device_key(signing_key_path(config))
    chain = EvidenceChain.of(device_chain(config, device_signers(config, key)))
    try:
        if volume is not None:
            steps.append(release(volume))
        certificate = sanitize(
            args.target if volume is None else volume.partition,
            steps_done=steps,
            tablet_volume=volume is not None,
            source=(
                f"fieldkit tablet data volume ({volume.policy.name}, LUKS2, key sealed to the "
                f"TPM 2.0 PCRs {'+'.join(map(str, volume.policy.tpm2_pcrs))})"
                if volume is not None
                else None
            ),
            device=config.device.id,
            key=key,
            evidence_chain=chain,
            sanitized_by=Person(name=args.sanitized_by, role="sanitized", organization=args.org),
            verified_by=Person(
                name=args.verified_by or args.sanitized_by, role="verified", organization=args.org
            ),
            location=args.location or config.device.site or "n/a",
            make=args.make,
            model=args.model,
            serial=args.serial,
            subsections=args.subsections,
        )
    except SanitizeError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    # On a tablet: the root filesystem, which the purge leaves alone.
    out = args.out or (Path(str(CERTIFICATE_DIR)) if volume is not None else Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"sanitization-{certificate.certificate_id}"
    stem.with_suffix(".json").write_text(certificate.model_dump_json(indent=2) + "\n")
    write_certificate_pdf(certificate, stem.with_suffix(".pdf"))
    v = certificate.verification
    print(f"method: NIST SP 800-88 {certificate.method.category}: {certificate.method.technique}")
    for step in certificate.method.steps:
        print(step)
    headers = "" if v.luks_headers_left is None else f", {v.luks_headers_left} LUKS headers left"
    print(
        f"verification: {v.samples_read} samples in {v.subsections} subsections, "
        f"{v.samples_failed} failed, {v.keyslots_left} keyslots left{headers}: "
        f"{certificate.result.upper()}"
    )
    print(f"certificate: {stem}.json and {stem}.pdf")
    return 0 if certificate.result == "pass" else 1


def kit_units(config: DeviceConfig) -> list[str]:
    """``systemctl stop`` of every fieldkit service unit of this role, and the kiosk browser."""
    from fieldkit.policies import unit_name
    from fieldkit.registry import specs_for_role

    units = [unit_name(spec.name) for spec in specs_for_role(config.device.role)]
    return ["systemctl", "stop", *units, "fieldkit-kiosk-browser.service"]


def device_signers(config: DeviceConfig, key: Ed25519PrivateKey) -> set[str]:
    """The keys this device's records may carry: the one it signs with now, and its own
    device key from before it was enrolled (if it has one)."""
    signers = {public_hex(key)}
    if config.wipe.device_key.is_file():
        signers.add(public_hex(load_device_key(config.wipe.device_key)))
    return signers


def device_chain(config: DeviceConfig, signers: set[str]) -> ChainSummary:
    """This device's erasure-record chain as it stands (none yet: an empty, intact chain)."""
    path = config.wipe.state_dir / EVIDENCE_FILE
    if not path.exists():
        return ChainSummary(records=0, head=GENESIS)
    store = EvidenceStore(path)
    try:
        return follow_chain((record for _, record in store.records()), signers)
    finally:
        store.close()


def records_not_sent(config: DeviceConfig) -> str:
    """What has not yet left for the hub: erasure records sync has not taken, and records in
    sync's outbox. Empty when everything is on its way or delivered."""
    problems = []
    path = config.wipe.state_dir / EVIDENCE_FILE
    if path.exists():
        store = EvidenceStore(path)
        try:
            waiting = len(store.not_handed_over())
        finally:
            store.close()
        if waiting:
            problems.append(f"{waiting} erasure record(s) not yet taken by sync")
    if config.sync.outbox.exists():
        with contextlib.closing(
            sqlite3.connect(f"file:{config.sync.outbox}?mode=ro", uri=True)
        ) as db:
            (queued,) = db.execute(
                "SELECT count(*) FROM record WHERE state != 'refused'"
            ).fetchone()
        if queued:
            problems.append(f"{queued} record(s) still in sync's outbox")
    return "; ".join(problems)


def cmd_verify_certificate(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.wipe.sanitize import verify_certificate

    try:
        text = args.file.read_text(encoding="utf-8")
        records = None
        if args.records is not None:
            records = parse_records(args.records.read_text(encoding="utf-8"), str(args.records))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"fieldkit: cannot read {args.file} or its records: {exc}", file=sys.stderr)
        return 2
    signers = {args.public_key} if args.public_key else None
    problems = verify_certificate(text, args.public_key, records, signers)
    for problem in problems:
        print(f"{args.file}: {problem}")
    if not problems:
        checked = "signature and erasure-record chain" if records is not None else "signature"
        print(f"{args.file}: {checked} valid")
        if records is None:
            print(f"{args.file}: chain not checked: give --records (the device's erasure records)")
        if args.public_key is None:
            signer = json.loads(text).get("signer", "")
            print(
                f"{args.file}: signer not pinned: it is {signer}; compare it with the device's "
                "signing key on the hub's evidence page, or give --public-key"
            )
    return 1 if problems else 0


def cmd_compliance(args: argparse.Namespace, config: DeviceConfig) -> int:

    from fieldkit.models import SITE_NETWORK_FILE
    from fieldkit.policies import PolicyError, antivirus_policy, default_policy_dir, load_policies
    from fieldkit.wipe.certificate_pdf import write_report_pdf
    from fieldkit.wipe.compliance import report_lines, run_compliance

    if args.root is not None and args.image is not None:
        print("fieldkit: give --root or --image, not both", file=sys.stderr)
        return 2
    # The booted tablet found the compliance run failing without --policies: the default was
    # the relative folder "policies", there only in a checkout.
    folder = args.policies or default_policy_dir()
    antivirus_file = folder / "antivirus.toml"
    try:
        policies = load_policies(folder)
        antivirus = antivirus_policy(folder) if antivirus_file.exists() else None
    except (PolicyError, ValueError) as exc:
        print(f"fieldkit: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    for given in (args.root, args.image):
        if given is not None and not given.exists():
            print(f"fieldkit: {given} does not exist", file=sys.stderr)
            return 2
    report = run_compliance(
        device=config.device.id,
        settings=config.wipe,
        site_file=config.sync.bundle / SITE_NETWORK_FILE,
        policies=policies,
        policy_files=sorted([*folder.glob("*.yaml"), *folder.glob("*.toml")]),
        antivirus=antivirus,
        key=load_device_key(signing_key_path(config)),
        root=args.root,
        image=args.image,
    )
    lines = report_lines(report)
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if args.pdf is not None:
        write_report_pdf("コンプライアンス確認(消去)", "Compliance run: erasure", lines, args.pdf)
    return 0 if report.ok else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wipe = sub.add_parser("wipe", help="erasure: scans, evidence, sanitization").add_subparsers(
        dest="wipe_command", required=True
    )
    scan = wipe.add_parser("scan", help="scan the residue catalogue for applicant data")
    scan.add_argument("--daily", action="store_true", help="the whole catalogue, any applicant")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(func=cmd_scan)
    wipe.add_parser("catalogue", help="list the residue catalogue").set_defaults(func=cmd_catalogue)
    chain = wipe.add_parser("verify-chain", help="check the erasure records' chain and signatures")
    chain.add_argument("--store", type=Path, default=None)
    chain.add_argument("--public-key", default=None, help="device public key (hex) to trust")
    chain.set_defaults(func=cmd_verify_chain)
    records = wipe.add_parser("records", help="print the last erasure records as JSON lines")
    records.add_argument("--last", type=int, default=10)
    records.add_argument("--all", action="store_true", help="every record, for an auditor")
    records.set_defaults(func=cmd_records)

    device = wipe.add_parser(
        "device",
        help="contract-end sanitization (R24): the tablet's encrypted data volume, "
        "or a block device or disk image given as TARGET",
    )
    device.add_argument(
        "target",
        type=Path,
        nargs="?",
        default=None,
        help="a block device or disk image; default: this tablet's encrypted data volume",
    )
    device.add_argument(
        "--policies",
        type=Path,
        default=INSTALLED_POLICY_DIR,
        help="the installed policies (erasure.yaml names the data volume)",
    )
    device.add_argument("--crypttab", type=Path, default=Path("/etc/crypttab"))
    device.add_argument("--yes", action="store_true", help="confirm: every byte is destroyed")
    device.add_argument("--sanitized-by", required=True, help="who performs the sanitization")
    device.add_argument("--verified-by", default=None, help="who verifies it (default: same)")
    device.add_argument("--org", default="", help="their organization")
    device.add_argument("--location", default=None, help="where (default: the device's site)")
    device.add_argument("--make", default=None)
    device.add_argument("--model", default=None)
    device.add_argument("--serial", default=None)
    device.add_argument("--subsections", type=int, default=1000)
    device.add_argument("--out", type=Path, default=None, help="folder for the certificate")
    device.add_argument(
        "--no-records", action="store_true", help="the device has no erasure records: say so"
    )
    device.add_argument(
        "--force",
        action="store_true",
        help="certify although records have not left for the hub (they never will)",
    )
    device.set_defaults(func=cmd_device)
    compliance = sub.add_parser("compliance", help="the compliance run (R31)").add_subparsers(
        dest="compliance_command", required=True
    )
    run = compliance.add_parser(
        "run", help="check policies in force and scan for residue; exit 1 when anything fails"
    )
    run.add_argument("--root", type=Path, default=None, help="a mounted rootfs instead of /")
    run.add_argument("--image", type=Path, default=None, help="a raw disk image: residue only")
    run.add_argument(
        "--policies",
        type=Path,
        default=None,
        help="the policies folder (erasure.yaml, browser.yaml, …, antivirus.toml); default: "
        "$FIELDKIT_POLICIES, else the device's /etc/fieldkit/policies, else the repository's",
    )
    run.add_argument("--json", type=Path, default=None, help="write the signed report here")
    run.add_argument("--pdf", type=Path, default=None, help="write the report as PDF here")
    run.set_defaults(func=cmd_compliance)
    for parent in (wipe, certificate_commands(sub)):
        verify = parent.add_parser(
            "verify-certificate" if parent is wipe else "verify",
            help="check a sanitization certificate's signature",
        )
        verify.add_argument("file", type=Path)
        verify.add_argument("--public-key", default=None, help="signer public key (hex) to trust")
        verify.add_argument(
            "--records",
            type=Path,
            default=None,
            help="the device's erasure records as JSON lines (the hub's export): check the chain",
        )
        verify.set_defaults(func=cmd_verify_certificate)


def certificate_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    return sub.add_parser("certificate", help="sanitization certificates").add_subparsers(
        dest="certificate_command", required=True
    )
