"""Benchmark: the hub's encrypted backup and its verified restore against bare pg_dump/pg_restore.

    .venv/bin/python bench/hub_backup.py [--rows 100000] [--packets 500] [--packet-kb 200]

On a temporary PostgreSQL cluster, a hub database at the latest schema is filled with
``--rows`` statistics records, ``--packets`` sealed packets of ``--packet-kb`` KB of random
bytes each (ciphertext does not compress) and 300 erasure records in one device's chain. It
times ``fieldkit hub backup``'s work (``make_backup``: the manifest's row hashes and chains in
the dump's snapshot, ``pg_dump`` custom format, encryption as it is written) and
``fieldkit hub restore``'s (``restore_backup``: the whole file checked, ``pg_restore`` in one
transaction, the manifest recomputed and compared). The baselines, measured in the same run on
the same database: ``pg_dump --format=custom`` into a file, and ``pg_restore`` of that file
into an empty database. The ratio says what encryption, the manifest and the verification cost
on top of PostgreSQL's own tools.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from tests.hubkit import PG_BIN, PostgresCluster  # noqa: E402
from tests.hubweb import generated_statistics  # noqa: E402

from fieldkit.hub.backup import make_backup, restore_backup  # noqa: E402
from fieldkit.hub.db import (  # noqa: E402
    ErasureRow,
    RecordRow,
    SealedPacketRow,
    StatisticsRow,
    make_engine,
    upgrade,
)
from fieldkit.sealing_keys import generate, load_private  # noqa: E402
from fieldkit.sync.courier import new_record_id  # noqa: E402
from fieldkit.wipe.record import ErasureRecord, EvidenceStore  # noqa: E402

PASSPHRASE = b"bench backup passphrase"


def ledger(device: str, kind: str, at: float) -> dict[str, object]:
    return {
        "record_id": new_record_id(),
        "device_id": device,
        "kind": kind,
        "created_at": at,
        "received_at": at,
        "digest": "0" * 64,
        "signature": "bench",
    }


def stored(session: Session, kind: str, table: type, at: float, row: dict[str, object]) -> None:
    """One record of tab-a's in the ledger and its row in ``table``, as ingest stores them."""
    record = ledger("tab-a", kind, at)
    session.execute(insert(RecordRow), [record])
    session.execute(
        insert(table), [{"record_id": record["record_id"], "device_id": "tab-a", **row}]
    )


def fill(url: str, work: Path, rows: int, packets: int, packet_kb: int) -> None:
    upgrade(url)
    engine = make_engine(url)
    now = time.time()
    with Session(engine) as session:
        for start in range(0, rows, 10_000):
            stats = generated_statistics(min(10_000, rows - start), seed=start)
            records = [
                ledger(s["device_id"], "statistics", now) | {"record_id": s["record_id"]}
                for s in stats
            ]
            session.execute(insert(RecordRow), records)
            session.execute(insert(StatisticsRow), stats)
        for _ in range(packets):
            stored(session, "packet", SealedPacketRow, now, {
                "municipality": "131016",
                "suite": "hpke-base-x25519-hkdfsha256-chacha20poly1305",
                "receiver_key": "0" * 16,
                "ciphertext": os.urandom(packet_kb * 1024),
                "signature": "bench",
            })  # fmt: skip
        store = EvidenceStore(work / "evidence.sqlite")
        key = Ed25519PrivateKey.generate()
        for _ in range(300):
            made = store.append(
                ErasureRecord(kind="daily", device="tab-a", started=now, finished=now, ok=True),
                key,
            )
            stored(session, "erasure", ErasureRow, now, {
                "at": made.finished,
                "level": "daily",
                "verified": True,
                "signed": False,
                "record": made.model_dump(mode="json"),
            })  # fmt: skip
        store.close()
        session.commit()
    engine.dispose()


def seconds(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--packets", type=int, default=500)
    parser.add_argument("--packet-kb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keys = generate(
            work / "admin", PASSPHRASE, private_name="backup-private.pem",
            public_name="backup-public.pem",
        )  # fmt: skip
        private = load_private(keys.private, PASSPHRASE)
        cluster = PostgresCluster()
        cluster.start()
        try:
            url = cluster.create_database("hub")
            fill(url, work, args.rows, args.packets, args.packet_kb)
            conninfo = f"host={cluster.socket_dir} port={cluster.port} user=postgres"
            plain = work / "plain.dump"

            def bare_dump() -> None:
                subprocess.run(
                    [str(PG_BIN / "pg_dump"), "--format=custom", f"--file={plain}",
                     f"--dbname={conninfo} dbname=hub"],
                    check=True,
                )  # fmt: skip

            base_dump = seconds(bare_dump)
            made: list[object] = []
            backup_time = seconds(
                lambda: made.append(
                    make_backup(
                        url, folder=work / "backups", public_key=keys.public, keep=2,
                        hub="hub-bench", roster_path=work / "no-roster.json", pg_bin=PG_BIN,
                    )
                )
            )  # fmt: skip
            backup = made[0].path  # type: ignore[attr-defined]
            cluster.create_database("bare")

            def bare_restore() -> None:
                subprocess.run(
                    [str(PG_BIN / "pg_restore"), "--no-owner", "--single-transaction",
                     f"--dbname={conninfo} dbname=bare", str(plain)],
                    check=True,
                )  # fmt: skip

            base_restore = seconds(bare_restore)
            restored_url = cluster.create_database("restored")
            outcome: list[object] = []
            restore_time = seconds(
                lambda: outcome.append(restore_backup(backup, private, restored_url, PG_BIN))
            )
            problems = outcome[0].problems  # type: ignore[attr-defined]
            mib = plain.stat().st_size / 2**20
            print(
                f"{args.rows} statistics rows, {args.packets} packets of {args.packet_kb} KB, "
                f"300 erasure records; pg_dump file {mib:.1f} MiB, "
                f"backup file {backup.stat().st_size / 2**20:.1f} MiB"
            )
            print(
                f"  backup  {backup_time:6.2f} s  (bare pg_dump {base_dump:6.2f} s: "
                f"{backup_time / base_dump:4.1f}x)"
            )
            print(
                f"  restore {restore_time:6.2f} s  (bare pg_restore {base_restore:6.2f} s: "
                f"{restore_time / base_restore:4.1f}x); verified: "
                f"{problems or 'yes'}"
            )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
