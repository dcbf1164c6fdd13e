"""Benchmark: journeys + stages + credits (every default model) against prepare, same run.

On the shared generator's events (``../shared/bench/gen_events.py``, as ``bench_prepare``), one
timed process loads the events, runs ``touchline prepare``, then the rest of ``touchline run``
with the default settings: conversions of every default type, journeys, stages of every stage
model, credits under every default model. The figure is the ratio of the second part's wall
time to prepare's (goal ≤ 0.3×), with the whole process's peak RSS. A second pair of runs at
1M events checks that Spark local[2] writes the same tables as DuckDB.

    python benchmarks/bench_journeys.py [--events 10e6] [--spark-events 1e6]
    python benchmarks/bench_journeys.py --run PARQUET --out JSON [--url URL]  # the timed run
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
from bench_prepare import DUCKDB_URL, SPARK_URL, _events_file, load_generator_events
from common import DATA, PYTHON, machine, timed, write_result

from touchline.config import MODELS_DEFAULT

log = logging.getLogger("bench_journeys")


def run_inner(parquet: Path, out: Path, url: str) -> None:
    """Load, prepare, then journeys, stages and credits; write timings and table digests."""
    from touchline import engine, store
    from touchline.config import Settings
    from touchline.pipeline import run
    from touchline.prepare import run_prepare

    db = DATA / "journeys_bench.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    settings = Settings(database_url=url.replace("{db}", str(db)), temp_directory=DATA / "tmp")
    con = engine.connect(settings=settings)
    load_generator_events(con, parquet)
    # the generator's events lack most canonical columns (ingest writes them all): add them
    # here, untimed, or `run` would migrate the 10M-row table inside the timed part
    store.init(con)
    end = con.table("events").timestamp.max().execute()
    t0 = time.perf_counter()
    run_prepare(con, settings, now=end.to_pydatetime() + timedelta(days=1))
    prepared = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = run(con, settings, prepare=False)
    journeys = time.perf_counter() - t1
    credits = con.table("credits")
    by = credits.group_by(["conversion", "model", "channel"]).aggregate(
        credit=credits.credit.sum(), value=credits.value.sum()).to_pandas()
    digest = {f"{r.conversion}/{r.model}/{r.channel}": [round(float(r.credit), 6),
                                                        round(float(r.value), 4)]
              for r in by.itertuples()}
    out.write_text(json.dumps({
        "engine": engine.engine_name(con), "prepare_seconds": round(prepared, 2),
        "journeys_seconds": round(journeys, 2), "parts": report.seconds, "rows": report.rows,
        "conversions": report.conversions.to_dict("records"), "credits": digest,
    }, indent=2, default=str))
    con.disconnect()
    db.unlink(missing_ok=True)


def _ours(label: str, parquet: Path, url: str, tag: str) -> tuple[dict, dict]:
    out = DATA / f"touchline_journeys_{tag}_{label}.json"
    record = timed(f"journeys/touchline-{tag}/{label}", [
        PYTHON, str(Path(__file__).resolve()), "--run", str(parquet), "--out", str(out),
        "--url", url], timeout=5400)
    return record, json.loads(out.read_text())


def main(events: float, spark_events: float) -> None:
    label, parquet = _events_file(events)
    ours, inner = _ours(label, parquet, DUCKDB_URL, "duckdb")
    ratio = inner["journeys_seconds"] / inner["prepare_seconds"]
    parity = ""
    if spark_events:
        small, small_file = _events_file(spark_events)
        duck, duck_inner = _ours(small, small_file, DUCKDB_URL, "duckdb")
        spark, spark_inner = _ours(small, small_file, SPARK_URL, "spark")
        same = {k: "yes" if duck_inner[k] == spark_inner[k] else "**no**"
                for k in ("rows", "credits")}
        sums = len(duck_inner["credits"])
        parity = f"""### Spark local[2] at {small} events

| output | DuckDB | Spark identical |
|---|---|---|
| rows of stages, journeys, journey_steps, credits | {duck_inner['rows']} | {same['rows']} |
| credits and value by conversion × model × channel (1e-6) | {sums} sums | {same['credits']} |

Journeys + credits: Spark {spark_inner['journeys_seconds']} s, DuckDB
{duck_inner['journeys_seconds']} s (whole runs {spark['wall_s']} s and {duck['wall_s']} s).
"""
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in inner["parts"].items())
    rows = ", ".join(f"`{k}` {v:,}" for k, v in inner["rows"].items())
    conversions = "\n".join(f"| {c['conversion']} | {c['conversions']:,} | {c['value']:,.2f} | "
                            f"{c['open_journeys']:,} |" for c in inner["conversions"])
    md = f"""## Journeys, stages and credits ({label} events, issue 14)

`python benchmarks/bench_journeys.py --events {events:g}`: after `touchline prepare` on the
generator's events, the rest of `touchline run` with the default settings (conversion types
purchase, lead, call, deal_won; journeys; stages of the four preset stage models; credits under
the default models: {", ".join(MODELS_DEFAULT)}), in the same process.

**Ratio journeys + stages + credits / prepare: {ratio:.2f}×** (goal ≤ 0.3×): {inner[
'journeys_seconds']} s against prepare's {inner['prepare_seconds']} s ({parts}). Peak RSS of
the whole run {ours['tree_peak_rss_mib']} MiB. Rows written: {rows}.

| conversion | conversions | value | open journeys |
|---|---|---|---|
{conversions}

{parity}"""
    write_result("journeys", md, {"machine": machine(), "events": events, "touchline": ours,
                                  "inner": inner, "ratio": ratio})
    log.info("journeys %s: ratio %.2f", label, ratio)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=float, default=10e6)
    ap.add_argument("--spark-events", type=float, default=1e6)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--url", default=DUCKDB_URL)
    args = ap.parse_args()
    if args.run:
        run_inner(args.run, args.out, args.url)
    else:
        main(args.events, args.spark_events)
