"""Benchmark: tablet → hub on loopback over mutual TLS, on SQLite and on PostgreSQL.

    .venv/bin/python bench/sync.py [--records 10000] [--rate 100] [--paced-seconds 10]

For each hub database it prints:
- burst: N records wait in the outbox (the tablet was offline), the link comes up; records
  committed at the hub per second until the last ack (an ack is sent only after the commit);
  also how fast the outbox takes durable submits (one fsync'd transaction per record);
- paced: records at ``--rate`` per second; submit → ack latency p50 / p99;
- baseline, measured in the same run on the same hub broker: bare MQTT QoS 1 publishes (no
  outbox, no signature, no database) — throughput and publish → PUBACK latency — and the
  ratios of fieldkit's numbers to it.
Targets (issue #5): ≥ 1,000 records/s on SQLite; p99 ≤ 100 ms at 100 records/s.

The hub ingest runs as its own process (``fieldkit service run hub-ingest``), as deployed;
the tablet's sync courier runs in this process, called directly (a submit over the local bus
adds one request round trip, about half a millisecond).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hubkit import (  # noqa: E402
    DeviceClient,
    HubIngestProcess,
    PostgresCluster,
    enrol_tablet,
    signed_record,
    statistics_body,
    tablet_dir,
)

from fieldkit.hub.broker import HubBroker  # noqa: E402
from fieldkit.pki import KitPki  # noqa: E402
from fieldkit.sync.courier import Courier  # noqa: E402
from fieldkit.sync.link import tls_client, tls_context  # noqa: E402
from fieldkit.sync.settings import SyncSection  # noqa: E402
from fieldkit.sync.wire import up_topic  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Tablet:
    def __init__(self, work: Path, pki: KitPki, port: int) -> None:
        settings = SyncSection(
            outbox=work / "outbox.sqlite",
            bundle=tablet_dir(pki, "tab-bench"),
            hub_port=port,
            max_records=1_000_000,
            window=500,
            ack_timeout=10.0,
        )
        self.courier = Courier("tab-bench", settings)
        self.submitted: dict[str, float] = {}
        self.acked: dict[str, float] = {}
        self.lock = threading.Lock()
        self.all_acked = threading.Event()
        self.expect = 0
        self.courier.on_acked = self._on_acked

    def _on_acked(self, ids: list[str]) -> None:
        now = time.perf_counter()
        with self.lock:
            for rid in ids:
                self.acked.setdefault(rid, now)
            if len(self.acked) >= self.expect:
                self.all_acked.set()

    def submit(self, n: int) -> str:
        rid = self.courier.submit_record("statistics", statistics_body(n))
        self.submitted[rid] = time.perf_counter()
        return rid

    def reset(self, expect: int) -> None:
        with self.lock:
            self.submitted.clear()
            self.acked.clear()
            self.expect = expect
            self.all_acked.clear()


def wait_for_ingest(pki: KitPki, port: int) -> None:
    """The ingest has migrated and subscribed: a record from another device is acked."""
    device = DeviceClient(pki, "tab-warm", port)
    device.connect()
    deadline = time.monotonic() + 60
    while not device.acks:
        if time.monotonic() > deadline:
            raise SystemExit("hub ingest did not acknowledge the warm-up record")
        device.publish(up_topic("tab-warm"), signed_record(pki, "tab-warm").encode())
        time.sleep(0.5)
    device.close()


def offline_submits(tablet: Tablet, records: int) -> float:
    """Durable submits (one fsync'd transaction each) while the hub is unreachable."""
    tablet.reset(records)
    start = time.perf_counter()
    for i in range(records):
        tablet.submit(i)
    return records / (time.perf_counter() - start)


def drain(tablet: Tablet, records: int) -> float:
    """The link comes up with ``records`` waiting: committed at the hub per second."""
    start = time.perf_counter()
    tablet.courier.start()
    if not tablet.all_acked.wait(600):
        raise SystemExit(f"only {len(tablet.acked)} of {records} acknowledged")
    return records / (max(tablet.acked.values()) - start)


def paced(tablet: Tablet, rate: float, seconds: float) -> list[float]:
    count = int(rate * seconds)
    tablet.reset(count)
    start = time.perf_counter()
    for i in range(count):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        tablet.submit(i)
    if not tablet.all_acked.wait(120):
        raise SystemExit("paced records were not all acknowledged")
    return [tablet.acked[r] - t for r, t in tablet.submitted.items()]


def baseline(pki: KitPki, port: int, records: int) -> tuple[float, list[float]]:
    """Bare QoS 1 publishes on the same TLS broker: what the network path alone costs."""
    bundle = tablet_dir(pki, "tab-bench")
    client = tls_client(
        "baseline",
        tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key"),
    )
    client.max_inflight_messages_set(500)
    client.connect("localhost", port)
    client.loop_start()
    payload = b"x" * 700  # about the size of a signed statistics record
    sent: dict[int, float] = {}
    done: dict[int, float] = {}
    finished = threading.Event()

    def on_publish(c: object, u: object, mid: int, reason: object, props: object) -> None:
        done[mid] = time.perf_counter()
        if len(done) >= records:
            finished.set()

    client.on_publish = on_publish
    start = time.perf_counter()
    for _ in range(records):
        info = client.publish("fieldkit/tab-bench/up/baseline", payload, qos=1)
        sent[info.mid] = time.perf_counter()
    finished.wait(120)
    elapsed = max(done.values()) - start
    # Paced latency: one at a time.
    single = []
    for _ in range(200):
        t = time.perf_counter()
        client.publish("fieldkit/tab-bench/up/baseline", payload, qos=1).wait_for_publish(5)
        single.append(time.perf_counter() - t)
    client.disconnect()
    client.loop_stop()
    return records / elapsed, single


def run(backend: str, database_url: str, args: argparse.Namespace, work: Path, pki: KitPki) -> None:
    with HubBroker(pki, work / "hub-broker", port=0) as broker:
        ingest = HubIngestProcess(work / "ingest", pki, broker.port, database_url)
        ingest.start()
        tablet = Tablet(work, pki, broker.port)
        try:
            wait_for_ingest(pki, broker.port)
            base_rate, base_lat = baseline(pki, broker.port, args.records)
            submit_rate = offline_submits(tablet, args.records)
            rate = drain(tablet, args.records)
            paced_lat = paced(tablet, args.rate, args.paced_seconds)
        finally:
            tablet.courier.stop()
            ingest.stop()
    ms = 1000.0
    p50, p99 = percentile(paced_lat, 0.5) * ms, percentile(paced_lat, 0.99) * ms
    b50 = percentile(base_lat, 0.5) * ms
    met = "met" if rate >= 1000 else "NOT met"
    print(
        f"[{backend}] burst: {args.records} records waiting, link up -> all acked: "
        f"{rate:,.0f} records/s committed at the hub (target >= 1,000: {met})"
    )
    print(f"[{backend}]   durable submits into the outbox (fsync each): {submit_rate:,.0f}/s")
    print(
        f"[{backend}] paced {args.rate:.0f} records/s for {args.paced_seconds:.0f} s: "
        f"submit->ack p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"(target p99 <= 100 ms: {'met' if p99 <= 100 else 'NOT met'})"
    )
    print(
        f"[{backend}] baseline, bare QoS1 publish on the same broker: {base_rate:,.0f} msg/s, "
        f"publish->PUBACK p50 {b50:.2f} ms"
    )
    print(
        f"[{backend}] ratios: throughput {rate / base_rate:.2f} x baseline; "
        f"paced p50 latency {p50 / b50:.0f} x baseline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    with tempfile.TemporaryDirectory(prefix="fieldkit-bench-") as tmp:
        work = Path(tmp)
        pki = KitPki(work / "pki")
        pki.init()
        pki.issue_hub()
        enrol_tablet(pki, "tab-bench")
        enrol_tablet(pki, "tab-warm")
        if args.backend in ("sqlite", "both"):
            run("sqlite", f"sqlite:///{work / 'hub.sqlite'}", args, work / "sqlite", pki)
        if args.backend in ("postgresql", "both"):
            cluster = PostgresCluster()
            cluster.start()
            try:
                run("postgresql", cluster.create_database(), args, work / "pg", pki)
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
