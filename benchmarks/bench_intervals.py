"""Benchmark: what the bootstrap intervals add to `touchline run`, against the credits they
accompany, in the same process.

On the shared generator's events (as ``bench_journeys``), one timed process loads and prepares
the events and builds the journeys, then, on the purchase journeys as ``touchline run`` sees
them, times the credits of each data-driven default model (``markov``, ``shapley``,
``counterfactual``, and ``auto``'s choice and pick) and their intervals with the default
``bootstrap_replicates`` (one shared draw, then each model). The figure is the intervals' time
as a share of journeys + credits and of prepare.

    python benchmarks/bench_intervals.py [--events 1e6 1e7]
    python benchmarks/bench_intervals.py --run PARQUET --out JSON   # the timed run
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
from bench_prepare import _events_file, load_generator_events
from common import DATA, PYTHON, machine, timed, write_result

log = logging.getLogger("bench_intervals")


def run_inner(parquet: Path, out: Path) -> None:
    """Prepare and journeys, then each model's credits and intervals, timed apart."""
    from touchline import engine, store
    from touchline.attribution.intervals import credit_intervals, resample
    from touchline.attribution.paths import journey_pathset
    from touchline.attribution.registry import run_model
    from touchline.attribution.select import HOLDOUT_DEFAULT, choose_model
    from touchline.config import Settings
    from touchline.journeys import write_journeys
    from touchline.prepare import run_prepare

    db = DATA / "intervals_bench.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    settings = Settings(database_url=f"duckdb:///{db}", temp_directory=DATA / "tmp")
    con = engine.connect(settings=settings)
    load_generator_events(con, parquet)
    end = con.table("events").timestamp.max().execute()
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    run_prepare(con, settings, now=end.to_pydatetime() + timedelta(days=1))
    seconds["prepare"] = time.perf_counter() - t
    store.init(con)
    t = time.perf_counter()
    write_journeys(con, settings)
    touches = con.table(store.JOURNEY_TOUCHES.name)
    paths, _ = journey_pathset(touches.filter(touches.conversion == "purchase"),
                               split_holdout=HOLDOUT_DEFAULT)
    seconds["journeys"] = time.perf_counter() - t
    replicates = settings.bootstrap_replicates
    t = time.perf_counter()
    drawn = resample(paths, replicates=replicates, seed=settings.bootstrap_seed)
    seconds["intervals: shared draw"] = time.perf_counter() - t
    for model in ("markov", "shapley", "counterfactual", "auto"):
        t = time.perf_counter()
        if model == "auto":
            choice = choose_model(paths)
            fitted, params, credits = choice.model, dict(choice.params), choice.credits
        else:
            fitted, params, credits = model, {}, run_model(paths, model)
        seconds[f"credits: {model}"] = time.perf_counter() - t
        t = time.perf_counter()
        credit_intervals(paths, fitted, params, credits=credits, resamples=drawn)
        seconds[f"intervals: {model} ({fitted})"] = time.perf_counter() - t
    out.write_text(json.dumps({"seconds": seconds, "replicates": replicates,
                               "paths": paths.n_paths, "distinct_paths": drawn.paths.n_paths,
                               "conversions": paths.total_conversions}, indent=2))
    con.disconnect()
    db.unlink(missing_ok=True)


def main(sizes: list[float]) -> None:
    sections, data = [], {}
    for events in sizes:
        md, data[events] = _section(events)
        sections.append(md)
    write_result("intervals", "\n".join(sections), {"machine": machine(), "runs": data})


def _section(events: float) -> tuple[str, dict]:
    label, parquet = _events_file(events)
    out = DATA / f"touchline_intervals_{label}.json"
    record = timed(f"intervals/{label}", [PYTHON, str(Path(__file__).resolve()), "--run",
                                          str(parquet), "--out", str(out)], timeout=5400)
    inner = json.loads(out.read_text())
    seconds = inner["seconds"]
    intervals = sum(v for k, v in seconds.items() if k.startswith("intervals"))
    credits = sum(v for k, v in seconds.items() if k.startswith("credits"))
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in seconds.items())
    md = f"""## Bootstrap intervals ({label} events, issue 18)

`python benchmarks/bench_intervals.py --events {events:g}`: on the purchase journeys after
`touchline prepare` and the journeys, the credits of the data-driven default models and their
bootstrap intervals ({inner['replicates']} replicates, one shared draw over
{inner['distinct_paths']:,} distinct of {inner['paths']:,} path rows,
{inner['conversions']:,.0f} conversions), in one process (peak RSS
{record['tree_peak_rss_mib']} MiB; the rest of the machine used {record.get('others_cpu_s', 0)}
CPU seconds meanwhile).

**Intervals / (journeys + these credits): {intervals / (seconds['journeys'] + credits):.2f}×;
intervals / prepare: {intervals / seconds['prepare']:.3f}×** ({intervals:.2f} s).

| part | seconds |
|---|---|
{rows}
"""
    log.info("intervals %s: %.2f s, %.3f of prepare", label, intervals,
             intervals / seconds["prepare"])
    return md, {"record": record, "inner": inner}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=float, nargs="+", default=[1e6, 1e7])
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.run:
        run_inner(args.run, args.out)
    else:
        main(args.events)
