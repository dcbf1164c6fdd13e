"""Benchmark: `touchline prepare` on 10M generated events vs the hand-written DuckDB reference.

Both run on the same Parquet file from ``../shared/bench/gen_events.py`` in the same invocation,
each under ``../shared/bench/timed.py``; the figure reported is the ratio of wall times. Counts
(unique events, sessions, anonymous ids) are checked against the generator's truth file.

Scope: prepare only (load + all STEPS). The reference also builds paths and linear credits, so
the ratio is conservative for touchline; paths + credits are not included here yet.

    python benchmarks/bench_prepare.py [--events 10e6]
    python benchmarks/bench_prepare.py --run PARQUET --out JSON   # the timed inner run
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
from common import DATA, PYTHON, SHARED_BENCH, machine, timed, write_result

log = logging.getLogger("bench_prepare")


def run_inner(parquet: Path, out: Path) -> None:
    """Load the generator's file as canonical ``events`` and run prepare; write counts."""
    import ibis

    from touchline import engine
    from touchline.config import Settings
    from touchline.prepare import run_prepare

    db = DATA / "prepare_bench.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    settings = Settings(database_url=f"duckdb:///{db}")
    con = engine.connect(settings=settings)
    t0 = time.perf_counter()
    raw = con.read_parquet(str(parquet))
    # the generator's columns differ from canonical events: map them here
    events = raw.select(
        message_id=raw.event_id, anonymous_id=raw.anonymous_id, user_id=raw.user_id,
        timestamp=raw.ts, event=raw.event,
        type=ibis.ifelse(raw.event == "page_view", "page", "track"),
        url=raw.url, referrer=raw.referrer, utm_source=raw.utm_source,
        utm_medium=raw.utm_medium, utm_campaign=raw.utm_campaign, gclid=raw.gclid,
        revenue=raw.revenue, source=ibis.literal("web"),
    )
    con.create_table("events", events, overwrite=True)
    loaded = time.perf_counter() - t0
    # the generator's clock runs past today for long-lived people: pin the run's "now" to the
    # data's end, else drop_future_timestamps rightly rejects those rows and counts differ
    end = con.table("events").timestamp.max().execute()
    result = run_prepare(con, settings, now=end.to_pydatetime() + timedelta(days=1))
    sessions = con.table("sessions")
    counts = {
        "unique_events": result.counts["touchpoints"],
        "sessions": result.counts["sessions"],
        "anonymous_ids": int(sessions.anonymous_id.nunique().execute()),
        "persons": result.counts["persons"],
        "rejects_by_reason": result.rejects_by_reason,
    }
    out.write_text(json.dumps({
        "load_seconds": round(loaded, 2), "prepare_seconds": round(result.seconds, 2),
        "steps": {s.name: round(s.seconds, 2) for s in result.steps}, "counts": counts,
    }, indent=2))
    con.disconnect()
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)


def main(events: float) -> None:
    label = f"{events / 1e6:g}M"
    parquet = DATA / f"events_{label}.parquet"
    DATA.mkdir(exist_ok=True)
    if not parquet.exists():
        import subprocess

        subprocess.run([PYTHON, str(SHARED_BENCH / "gen_events.py"), "--events", str(events),
                        "--out", str(parquet)], check=True)
    truth = json.loads(parquet.with_suffix(".truth.json").read_text())
    ref_out = DATA / f"ref_prepare_{label}.json"
    ref = timed(f"prepare/reference/{label}", [
        PYTHON, str(SHARED_BENCH / "pipelines.py"), "--engine", "duckdb", "--input", str(parquet),
        "--out", str(ref_out)])
    ours_out = DATA / f"touchline_prepare_{label}.json"
    ours = timed(f"prepare/touchline/{label}", [
        PYTHON, str(Path(__file__).resolve()), "--run", str(parquet), "--out", str(ours_out)])
    inner = json.loads(ours_out.read_text())
    reference = json.loads(ref_out.read_text())
    counts = inner["counts"]
    checks = {k: (counts[k], truth[k], counts[k] == truth[k])
              for k in ("unique_events", "sessions", "anonymous_ids")}
    ratio = ours["wall_s"] / ref["wall_s"]
    data = {"machine": machine(), "events": events, "truth": truth, "reference": ref,
            "reference_counts": {k: reference.get(k) for k in
                                 ("events_dedup", "sessions", "anonymous_ids", "persons")},
            "touchline": ours, "touchline_inner": inner, "ratio": ratio, "checks": checks}
    rows = "\n".join(f"| {k} | {a:,} | {b:,} | {'yes' if ok else '**no**'} |"
                     for k, (a, b, ok) in checks.items())
    steps = "\n".join(f"| {k} | {v:.1f} |" for k, v in inner["steps"].items())
    ref_cpu, our_cpu = ref.get("others_cpu_s"), ours.get("others_cpu_s")
    md = f"""## Prepare ({label} events)

`touchline prepare` (load + every step: clean, bots, standardise, dedupe, sessions, channels,
identity graph, accounts) against `../shared/bench/pipelines.py --engine duckdb` (dedupe,
sessions, channel, stitch, paths, linear credits) on the same `gen_events.py` file, same run.
Scope: **prepare only** — paths and linear credits are not in touchline's timing yet, so the
reference does strictly more visible work, while touchline does more preparation.

| run | wall s | peak RSS MiB | others' CPU s |
|---|---|---|---|
| reference (DuckDB SQL) | {ref['wall_s']} | {ref['tree_peak_rss_mib']} | {ref_cpu} |
| touchline prepare | {ours['wall_s']} | {ours['tree_peak_rss_mib']} | {our_cpu} |

**Ratio touchline / reference: {ratio:.2f}×** (goal ≤ 0.5× for prepare + paths + credits).
Inside touchline: load {inner['load_seconds']} s, prepare {inner['prepare_seconds']} s.

| count | touchline | truth.json | equal |
|---|---|---|---|
{rows}

| step | seconds |
|---|---|
{steps}
"""
    write_result("prepare", md, data)
    log.info("prepare %s: ratio %.2f", label, ratio)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=float, default=10e6)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.run:
        run_inner(args.run, args.out)
    else:
        main(args.events)
