"""Ingest benchmark: `touchline ingest` of N generated events (Parquet, and the same rows as
NDJSON) against DuckDB loading the same file with its own reader
(``CREATE TABLE AS SELECT * FROM read_parquet/read_json``), in the same run.

Goal (issue 3): ≤ 2× DuckDB's time, with bounded peak memory. N defaults to 10M
(``BENCH_INGEST_EVENTS`` overrides it).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import duckdb
from common import DATA, PYTHON, ROOT, SHARED_BENCH, machine, timed, write_result

EVENTS = int(float(os.environ.get("BENCH_INGEST_EVENTS", "10e6")))
TAG = f"{EVENTS // 1_000_000}M" if EVENTS >= 1_000_000 else f"{EVENTS // 1000}k"
TOUCHLINE = str(Path(PYTHON).with_name("touchline"))


def _inputs() -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    parquet = DATA / f"events_{TAG}.parquet"
    if not parquet.exists():
        import subprocess

        subprocess.run([PYTHON, str(SHARED_BENCH / "gen_events.py"), "--events", str(EVENTS),
                        "--out", str(parquet)], check=True)
    ndjson = DATA / f"events_{TAG}.ndjson"
    if not ndjson.exists():
        con = duckdb.connect()
        con.execute(f"COPY (SELECT * FROM read_parquet('{parquet}')) TO '{ndjson}' (FORMAT JSON)")
    return parquet, ndjson


def _reference(label: str, reader: str) -> dict:
    db = DATA / f"ref-{label}.duckdb"
    db.unlink(missing_ok=True)
    code = (f"import duckdb; duckdb.connect('{db}').execute("
            f"\"CREATE TABLE events AS SELECT * FROM {reader}\")")
    record = timed(f"ingest/ref/{label}", [PYTHON, "-c", code])
    db.unlink(missing_ok=True)
    return record


def _touchline(label: str, path: Path) -> dict:
    db = DATA / f"tl-{label}.duckdb"
    db.unlink(missing_ok=True)
    shutil.rmtree(DATA / f"tl-{label}.duckdb.staging", ignore_errors=True)
    record = timed(f"ingest/touchline/{label}", [
        TOUCHLINE, "ingest", str(path), "--kind", "events",
        "--map", str(ROOT / "benchmarks" / "gen_events_map.toml"),
        "--database", f"duckdb:///{db}",
    ])
    rows = duckdb.connect(str(db), read_only=True).execute("select count(*) from events").fetchone()
    record["rows_loaded"] = rows[0]
    db.unlink(missing_ok=True)
    return record


def main() -> None:
    parquet, ndjson = _inputs()
    runs = {
        "parquet": (_reference(f"parquet-{TAG}", f"read_parquet('{parquet}')"),
                    _touchline(f"parquet-{TAG}", parquet)),
        "ndjson": (_reference(f"ndjson-{TAG}",
                              f"read_json('{ndjson}', format='newline_delimited')"),
                   _touchline(f"ndjson-{TAG}", ndjson)),
    }
    rows = []
    for fmt, (ref, ours) in runs.items():
        ratio = ours["wall_s"] / ref["wall_s"]
        rows.append(f"| {fmt} | {ref['wall_s']:.1f} s | {ours['wall_s']:.1f} s | "
                    f"**{ratio:.2f}×** | "
                    f"{ref['tree_peak_rss_mib'] / 1024:.2f} / "
                    f"{ours['tree_peak_rss_mib'] / 1024:.2f} GiB | "
                    f"{ours['rows_loaded']:,} |")
    md = "\n".join([
        f"## Ingest ({TAG} events, issue 3)",
        "",
        f"Command: `python benchmarks/run.py ingest` (BENCH_INGEST_EVENTS={EVENTS}). Input: "
        "`../shared/bench/gen_events.py` Parquet and the same rows as NDJSON. Reference: DuckDB's "
        "own reader, `CREATE TABLE AS SELECT * FROM read_parquet/read_json`, same run. touchline "
        "does more: typed validation with per-row rejects, message-id dedupe within the file and "
        "against the table, run record. Goal ≤ 2×.",
        "",
        "| format | DuckDB reader | touchline ingest | ratio | peak RSS ref / touchline "
        "| rows loaded |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Machine: {machine()}.",
    ])
    write_result("ingest", md, {k: {"reference": r, "touchline": t} for k, (r, t) in runs.items()})
    print(md)


if __name__ == "__main__":
    main()
