"""``fieldkit wipe ...``: catalogue scans, the evidence chain, contract-end sanitization."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from fieldkit.wipe.catalogue import Catalogue
from fieldkit.wipe.record import (
    ErasureRecord,
    EvidenceStore,
    load_device_key,
    public_hex,
    verify_chain,
)
from fieldkit.wipe.service import EVIDENCE_FILE, Wiper

if TYPE_CHECKING:
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
        for finding in location.findings:
            print(f"         {finding.kind} in {finding.where} at {finding.offset}")
    for failure in record.failures:
        print(f"  failure: {failure}")


def cmd_scan(args: argparse.Namespace, config: DeviceConfig) -> int:
    wiper = Wiper(config.wipe, config.device.id)
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
    trusted = args.public_key or public_hex(load_device_key(config.wipe.device_key))
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
        for seq, record in store.records()[-args.last :]:
            print(json.dumps({"seq": seq, **record.model_dump(mode="json")}))
    finally:
        store.close()
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path

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
    records.set_defaults(func=cmd_records)
