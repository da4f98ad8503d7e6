"""Benchmark: hub web report pages and exports over a large statistics table.

    .venv/bin/python bench/hub_web_reports.py [--rows 100000] [--repeat 5]

On SQLite and on PostgreSQL (a temporary cluster), with ``--rows`` generated statistics
records, it times through the Flask test client (logged in as admin): the counts-by-site page,
the sex × age band XLSX, the completion report PDF, and a municipality user's scoped CSV. The
baseline, measured in the same run on the same database, is one bare grouped scan
``SELECT site, count(*) … GROUP BY site`` through SQLAlchemy: the ratio says what the report's
extra grouping, the rendering and the web layer cost on top of reading the table once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from tests.hubkit import MUNICIPALITY, PostgresCluster  # noqa: E402
from tests.hubweb import PASSWORD, generated_statistics, login, store_statistics, web_config  # noqa: E402

from fieldkit.hub.db import StatisticsRow  # noqa: E402
from fieldkit.hub.web.app import create_app  # noqa: E402
from fieldkit.hub.web.auth import create_account  # noqa: E402
from fieldkit.hub.web.extensions import hubweb  # noqa: E402
from fieldkit.pki import KitPki  # noqa: E402


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs (after one warm-up)."""
    action()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(name: str, url: str, work: Path, rows: int, repeat: int) -> None:
    pki = KitPki(work / "pki")
    pki.init()
    app = create_app({"FIELDKIT": web_config(work, pki, url), "TESTING": True})
    with Session(hubweb(app).engine) as session:
        create_account(session, "admin", PASSWORD, "admin", actor="bench")
        create_account(session, "city", PASSWORD, "municipality", [MUNICIPALITY], actor="bench")
        session.commit()
    for start in range(0, rows, 10_000):
        store_statistics(app, generated_statistics(min(10_000, rows - start), seed=start))
    admin, city = app.test_client(), app.test_client()
    login(admin, "admin")
    login(city, "city")

    def baseline() -> object:
        with Session(hubweb(app).engine) as session:
            query = select(StatisticsRow.site, func.count()).group_by(StatisticsRow.site)
            return session.execute(query).all()

    base = timed(baseline, repeat)
    print(f"{name}: {rows} statistics rows; baseline grouped scan {base * 1000:.1f} ms")
    for label, path, client in (
        ("counts by site (HTML)", "/reports/counts/site", admin),
        ("sex x age band (XLSX)", "/reports/counts/sex-age.xlsx", admin),
        ("completion report (PDF)", "/reports/completion.pdf", admin),
        ("municipality-scoped (CSV)", "/reports/counts/municipality.csv", city),
    ):

        def fetch(path: str = path, client: object = client) -> object:
            response = client.get(path)  # type: ignore[attr-defined]
            assert response.status_code == 200, path
            return response

        seconds = timed(fetch, repeat)
        print(f"  {label:28} {seconds * 1000:8.1f} ms  ({seconds / base:5.1f}x baseline)")
    hubweb(app).engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sqlite").mkdir()
        run("sqlite", f"sqlite:///{work / 'hub.sqlite'}", work / "sqlite", args.rows, args.repeat)
        cluster = PostgresCluster()
        cluster.start()
        try:
            (work / "pg").mkdir()
            run("postgresql", cluster.create_database(), work / "pg", args.rows, args.repeat)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
