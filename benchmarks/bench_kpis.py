"""Benchmark: every KPI by month and channel against prepare, same run (issue 15).

On the shared generator's events (``../shared/bench/gen_events.py``, as ``bench_prepare`` and
``bench_journeys``), one timed process loads the events, runs ``touchline prepare`` (timed),
the rest of ``touchline run`` with the default settings (not timed: the KPIs read its
journeys, stages and credits), then computes every registered KPI as ``touchline kpis
--period month --by channel`` does: by month and channel where the KPI offers them (else by
what it offers), each result fetched whole, inside one ``computed_once`` block (what several
KPIs read, such as each person's first session or the credited touches, is computed by the
first KPI that reads it, so its time holds it). A KPI whose inputs the events cannot give (spend,
Search Console, surveys, social, reviews) or whose breakdown its tables do not hold is skipped
and listed with the reason, as the command says it. The figure is the ratio of the KPIs' wall
time to prepare's (goal ≤ 0.2×), with the whole process's peak RSS.

The generator writes events only: the other inputs (spend, Search Console, surveys, social,
reviews) come from the simulator (``--side-people`` people, seed 1), ingested untimed as a user
imports them, so every KPI the events allow is computed; their people are not the events'
(survey answers and reviews match no one and count as Unassigned), which changes no query's
work.

    python benchmarks/bench_kpis.py [--events 10e6] [--side-people 20000]
    python benchmarks/bench_kpis.py --run PARQUET --out JSON [--url URL]  # the timed run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_prepare import DUCKDB_URL, _events_file, load_generator_events
from common import DATA, PYTHON, machine, timed, write_result

log = logging.getLogger("bench_kpis")


SIDE_KINDS = ("spend", "search_console", "surveys", "social", "reviews")


def side_files(people: int) -> Path:
    """The simulator's files for the KPIs' other inputs (made once per size, then reused)."""
    from touchline.simulate import simulate

    folder = DATA / f"kpis_side_{people}"
    if not (folder / "truth.json").exists():
        simulate(people, 1, folder)
    return folder


def run_inner(parquet: Path, out: Path, url: str, side: Path | None = None) -> None:
    """Load, prepare (timed), run the journeys and credits, ingest the other inputs from
    ``side``, then every KPI (timed)."""
    from touchline import engine
    from touchline.collect.ingest import ingest_file
    from touchline.config import Settings
    from touchline.errors import MissingInputError, ModelFitError, UnknownKPIError
    from touchline.metrics.kpis import KPIS, compute, computed_once
    from touchline.pipeline import run
    from touchline.prepare import run_prepare

    db = DATA / "kpis_bench.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    settings = Settings(database_url=url.replace("{db}", str(db)), temp_directory=DATA / "tmp")
    con = engine.connect(settings=settings)
    load_generator_events(con, parquet)
    end = con.table("events").timestamp.max().execute()
    t0 = time.perf_counter()
    run_prepare(con, settings, now=end.to_pydatetime() + timedelta(days=1))
    prepared = time.perf_counter() - t0
    run(con, settings, prepare=False)
    for kind in SIDE_KINDS if side else ():
        ingest_file(con, side / f"{kind}.csv", kind, settings=settings, source=None)
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    skipped: dict[str, str] = {}
    t1 = time.perf_counter()
    # as `touchline kpis` does: what several KPIs read is computed once, in the first KPI
    # that reads it (its time holds it), and dropped at the end (in the total)
    with computed_once(con):
        for kpi in KPIS.values():
            started = time.perf_counter()
            by = ["channel"] if "channel" in kpi.dimensions else []
            period = "month" if "period" in kpi.dimensions else None
            try:
                frame = compute(con, kpi.name, by=by, period=period,
                                model=settings.default_model, settings=settings).to_pandas()
            except (MissingInputError, UnknownKPIError, ModelFitError) as exc:
                skipped[kpi.name] = str(exc).splitlines()[0]
                continue
            finally:
                seconds[kpi.name] = round(time.perf_counter() - started, 3)
            rows[kpi.name] = len(frame)
    kpis = time.perf_counter() - t1
    out.write_text(json.dumps({
        "engine": engine.engine_name(con), "prepare_seconds": round(prepared, 2),
        "kpis_seconds": round(kpis, 2), "seconds": seconds, "rows": rows,
        "skipped": skipped}, indent=2, default=str))
    con.disconnect()
    db.unlink(missing_ok=True)


def main(events: float, side_people: int) -> None:
    label, parquet = _events_file(events)
    side = side_files(side_people)
    out = DATA / f"touchline_kpis_{label}.json"
    ours = timed(f"kpis/touchline-duckdb/{label}", [
        PYTHON, str(Path(__file__).resolve()), "--run", str(parquet), "--out", str(out),
        "--url", DUCKDB_URL, "--side", str(side)], timeout=5400)
    inner = json.loads(out.read_text())
    ratio = inner["kpis_seconds"] / inner["prepare_seconds"]
    slowest = sorted(inner["seconds"].items(), key=lambda kv: -kv[1])[:5]
    computed = len(inner["rows"])
    skipped = "\n".join(f"| `{k}` | {reason} |" for k, reason in inner["skipped"].items())
    md = f"""## KPIs by month and channel ({label} events, issue 15)

`python benchmarks/bench_kpis.py --events {events:g} --side-people {side_people}`: after
`touchline prepare` and the rest of `touchline run` on the generator's events, and the
simulator's spend, Search Console, survey, social and review files ({side_people:,} people)
ingested, every registered KPI as `touchline kpis --period month --by channel` computes it (by
what it offers where it has no month or channel), each result fetched whole, in the same
process.

**Ratio KPIs / prepare: {ratio:.2f}×** (goal ≤ 0.2×): {computed} KPIs in {inner[
'kpis_seconds']} s against prepare's {inner['prepare_seconds']} s. Peak RSS of the whole run
{ours['tree_peak_rss_mib']} MiB. Slowest: {", ".join(f"`{k}` {v:.1f} s" for k, v in slowest)}.

| skipped KPI | why (as `touchline kpis` says it) |
|---|---|
{skipped}
"""
    write_result("kpis", md, {"machine": machine(), "events": events,
                              "side_people": side_people, "touchline": ours,
                              "inner": inner, "ratio": ratio})
    log.info("kpis %s: ratio %.2f", label, ratio)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=float, default=10e6)
    ap.add_argument("--side-people", type=int, default=20_000)
    ap.add_argument("--side", type=Path)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--url", default=DUCKDB_URL)
    args = ap.parse_args()
    if args.run:
        run_inner(args.run, args.out, args.url, args.side)
    else:
        main(args.events, args.side_people)
