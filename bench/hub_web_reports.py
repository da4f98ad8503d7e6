"""Benchmark: hub web report pages and exports over a large statistics table.

    .venv/bin/python bench/hub_web_reports.py [--rows 100000] [--repeat 5]

On SQLite and on PostgreSQL (a temporary cluster), with ``--rows`` generated statistics
records, it times through the Flask test client (logged in as admin): the counts-by-site page,
the sex × age band XLSX, the completion report PDF, and a municipality user's scoped CSV; and
the completion report over most of the dates and over one day (``?from=&to=``: SQLite reads a
wide range by scanning, a narrow one through the date index, ``counts.covering``); and
the contract's paperwork (issue 23) over a month of visits with cards handed over: the
completion report's XLSX (8 tables), counts by the place visited, the cards-by-place CSV, and
様式2 (the schedule) and 様式4 (the results and its attachments) generated and kept. The
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
from tests.hubweb import (  # noqa: E402
    PASSWORD,
    generated_month,
    generated_statistics,
    login,
    store_statistics,
    web_config,
)

from fieldkit.hub.db import StatisticsRow  # noqa: E402
from fieldkit.hub.web.app import create_app  # noqa: E402
from fieldkit.hub.web.auth import create_account  # noqa: E402
from fieldkit.hub.web.extensions import hubweb  # noqa: E402
from fieldkit.hub.web.models import ContractRow, VisitRow  # noqa: E402
from fieldkit.pki import KitPki  # noqa: E402


def contract_row() -> ContractRow:
    """The contract's details, as the admin would have saved them."""
    return ContractRow(
        id=1,
        work_name="令和8年度 マイナンバーカード普及促進事業",
        client="長野県知事 阿部 守一",
        signed_on="2026-07-17",
        started_on="2026-07-21",
        period_start="2026-07-17",
        period_end="2027-02-26",
        completed_on="2027-02-26",
        amount_yen=12_345_678,
        contractor_address="長野県長野市",
        contractor_name="株式会社フィールドキット",
        representative="代表取締役 山田 花子",
        agent_name="佐藤 一郎",
        agent_title="事業部 部長",
        work_summary="",
        updated_at=0.0,
        updated_by="bench",
    )


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
    # No CSRF token to fetch before each generation: the POST alone is timed.
    config = {"FIELDKIT": web_config(work, pki, url), "TESTING": True, "WTF_CSRF_ENABLED": False}
    app = create_app(config)
    with Session(hubweb(app).engine) as session:
        create_account(session, "admin", PASSWORD, "admin", actor="bench")
        create_account(session, "city", PASSWORD, "municipality", [MUNICIPALITY], actor="bench")
        session.add(contract_row())
        session.commit()
    # The paperwork's month: facilities and visits (no sessions of their own; the rows below
    # are the sessions), cards handed over at each issuance-support visit.
    visits, _ = generated_month(app, sessions_per_visit=0)
    with Session(hubweb(app).engine) as session:
        for n, visit in enumerate(v for v in visits if v["kind"] == "card-issuance-support"):
            row = session.get(VisitRow, visit["id"])
            assert row is not None
            row.cards_issued = 20 + n
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
        # The generated sessions fall on 2026-08-01 … 2026-09-28: most of them, and one day.
        ("completion, most dates (PDF)", "/reports/completion.pdf?from=2026-08-03", admin),
        (
            "completion, one day (PDF)",
            "/reports/completion.pdf?from=2026-08-10&to=2026-08-10",
            admin,
        ),
        ("municipality-scoped (CSV)", "/reports/counts/municipality.csv", city),
        ("completion, 8 tables (XLSX)", "/reports/completion.xlsx", admin),
        ("cards by place (CSV)", "/reports/counts/cards-place.csv", admin),
        ("by the place visited (CSV)", "/reports/counts/place.csv", admin),
        ("form 2 schedule, kept (PDF)", "POST form2", admin),
        ("form 4 results, kept (PDF)", "POST form4", admin),
    ):

        def fetch(path: str = path, client: object = client) -> object:
            if path.startswith("POST "):
                form = {"kind": path.split()[1], "issued_on": "2026-07-21"}
                response = client.post("/contract/documents", data=form)  # type: ignore[attr-defined]
                assert response.status_code == 302, path
            else:
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
