"""Antivirus timings, each as a ratio against a baseline measured in the same run. R10

    .venv/bin/python bench/antivirus.py [--rounds N] [--files N]

- gate: the kiosk's ``gate`` request at session start, against a bus ``ping`` round trip
  (the cheapest request there is). Target: under 2x ping, so the gate adds nothing visible.
- freshclam: one update run against the loopback mirror (download, and up to date), against
  starting ``freshclam --version`` (the bare cost of the process).
- clamscan: scanning N small files with the kit database, against ``clamscan --version``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fieldkit.antivirus.database import build_unsigned_database, hex_signature
from fieldkit.antivirus.engine import run_clamscan, run_freshclam
from fieldkit.antivirus.messages import GateReply, GateRequest
from fieldkit.antivirus.mirror import DefinitionsMirror, publish_database
from fieldkit.antivirus.settings import AntivirusSection
from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus, Endpoint, RequestTimeout, read_password
from fieldkit.config import load_config
from fieldkit.messages import Ping, Pong
from fieldkit.pki import KitPki
from fieldkit.registry import Identity, identities_for, load_specs
from fieldkit.runner import start_service, stop_service

BENCH = Identity(name="bench", writes=("bench/req/#",), reads=("+/rep/bench", "+/error"))


def timed(action: Callable[[], object], rounds: int) -> float:
    """Median seconds of ``rounds`` runs."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def report(name: str, value: float, baseline_name: str, baseline: float) -> None:
    ratio = value / baseline if baseline else float("inf")
    print(
        f"{name:28} {value * 1000:9.2f} ms   {baseline_name:24} {baseline * 1000:9.2f} ms   "
        f"ratio {ratio:6.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fk-av-bench-") as tmp:
        root = Path(tmp)
        mirror_dir = root / "mirror"
        ndb = (
            hex_signature("Fieldkit.Bench.Marker-1", b"FIELDKIT-AV-BENCH-MARKER") + "\n"
        ).encode()
        database = build_unsigned_database("fieldkit", {"fieldkit.ndb": ndb}, version=1)
        publish_database(mirror_dir, "fieldkit.cud", database)
        # The mirror over TLS with a throwaway kit's hub certificate, as on the hub.
        kit = KitPki(root / "pki")
        kit.init("bench kit CA")
        kit.issue_hub()
        cert, key = kit.hub_file("server.crt"), kit.hub_file("server.key")
        with DefinitionsMirror(mirror_dir, cert, key) as mirror:
            (root / "device.toml").write_text(
                f'[device]\nid = "bench-tablet"\n[bus]\nport = 0\nruntime_dir = "{root / "run"}"\n'
                f'[antivirus]\nmirror_url = "{mirror.url}"\nofficial_databases = []\n'
                f'mirror_ca = "{kit.ca_cert}"\n'
                f'database_dir = "{root / "db"}"\nupdate_on_start = false\n'
            )
            config = load_config(root / "device.toml")
            section: AntivirusSection = config.antivirus
            db_dir, conf = root / "db", root / "freshclam.conf"

            download = timed(lambda: run_freshclam(section, db_dir, conf), 1)
            up_to_date = timed(lambda: run_freshclam(section, db_dir, conf), 5)
            bare = timed(
                lambda: subprocess.run(["freshclam", "--version"], capture_output=True, check=True),
                5,
            )
            report("freshclam download", download, "freshclam --version", bare)
            report("freshclam up to date", up_to_date, "freshclam --version", bare)

            files = root / "files"
            files.mkdir()
            for i in range(args.files):
                (files / f"f{i}.txt").write_bytes(os.urandom(4096))
            scan = timed(lambda: run_clamscan(section, db_dir, [files]), 3)
            bare_scan = timed(
                lambda: subprocess.run(["clamscan", "--version"], capture_output=True, check=True),
                3,
            )
            report(f"clamscan {args.files} x 4 KiB", scan, "clamscan --version", bare_scan)

            runtime = config.bus.runtime_dir
            runtime.mkdir(parents=True)
            identities = [*identities_for(load_specs()), BENCH]
            with LocalBroker(runtime, identities, Endpoint(port=0)) as broker:
                ctx = start_service(load_specs(["antivirus"])[0], config)
                bus = Bus("bench", broker.endpoint, read_password(runtime, "bench"))
                bus.connect()
                for _ in range(50):  # until the service's subscriptions are in place
                    try:
                        bus.request("antivirus", "ping", Ping(), Pong, timeout=0.2)
                        break
                    except RequestTimeout:
                        continue
                ping = timed(lambda: bus.request("antivirus", "ping", Ping(), Pong), args.rounds)
                gate = timed(
                    lambda: bus.request("antivirus", "gate", GateRequest(), GateReply), args.rounds
                )
                report("gate request", gate, "ping request", ping)
                bus.close()
                stop_service(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
