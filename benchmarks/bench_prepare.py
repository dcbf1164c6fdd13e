"""Benchmark: `touchline prepare` on 10M generated events vs the hand-written DuckDB reference
that stores its tables (``pipelines.py --engine duckdb-persist``).

Both run on the same Parquet file from ``../shared/bench/gen_events.py`` in the same invocation,
each under ``../shared/bench/timed.py``; the figure reported is the ratio of wall times. Counts
(unique events, sessions, anonymous ids) are checked against the generator's truth file.

Both sides build paths and linear credits after preparing. A second pair of runs at 1M events
checks that Spark local[2] gives the same outputs as DuckDB and reports its time ratio.

    python benchmarks/bench_prepare.py [--events 10e6] [--spark-events 1e6]
    python benchmarks/bench_prepare.py --events 50e6 --spark-events 0 --memory-limit 6GB
    python benchmarks/bench_prepare.py --run PARQUET --out JSON [--url URL]  # the timed run
    python benchmarks/bench_prepare.py --floor DB --out JSON  # the persistence floor (below)

The persistence floor: after the timed run, a separate process copies the two large tables
prepare must leave behind (``touches``, ``sessions``) within the same warehouse file. Loading
the events plus those two writes is what any design that keeps its results in DuckDB pays
before it computes anything; it is reported as a ratio to the reference too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA, PYTHON, SHARED_BENCH, machine, timed, write_result

log = logging.getLogger("bench_prepare")


def _warehouse() -> Path:
    return DATA / "prepare_bench.duckdb"


def _remove_warehouse() -> None:
    db = _warehouse()
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)


def load_generator_events(con: object, parquet: Path) -> None:
    """The generator's Parquet as the canonical ``events`` table (its columns differ)."""
    import ibis

    raw = con.read_parquet(str(parquet))  # type: ignore[attr-defined]
    events = raw.select(
        message_id=raw.event_id, anonymous_id=raw.anonymous_id, user_id=raw.user_id,
        timestamp=raw.ts.cast("timestamp"), event=raw.event,
        type=ibis.ifelse(raw.event == "page_view", "page", "track"),
        url=raw.url, referrer=raw.referrer, utm_source=raw.utm_source,
        utm_medium=raw.utm_medium, utm_campaign=raw.utm_campaign, gclid=raw.gclid,
        revenue=raw.revenue, source=ibis.literal("web"),
    )
    con.create_table("events", events, overwrite=True)  # type: ignore[attr-defined]


class DiskSampler:
    """The largest size the warehouse file (with its WAL) and the engine's spill folder reach
    during a run, sampled every ``interval`` seconds in a thread (issue 19 goal 2: disk used by
    scratch data is bounded and reported)."""

    def __init__(self, warehouse: Path, scratch: Path, interval: float = 1.0) -> None:
        import threading

        self.warehouse, self.scratch, self.interval = warehouse, scratch, interval
        self.peak_warehouse = self.peak_scratch = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _size(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        total = 0
        for child in path.rglob("*") if path.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):  # spill files come and go
                total += child.stat().st_size if child.is_file() else 0
        return total

    def sample(self) -> None:
        wal = self.warehouse.with_name(self.warehouse.name + ".wal")
        self.peak_warehouse = max(self.peak_warehouse,
                                  self._size(self.warehouse) + self._size(wal))
        self.peak_scratch = max(self.peak_scratch, self._size(self.scratch))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> DiskSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict[str, float]:
        gib = 1024 ** 3
        return {"peak_warehouse_gib": round(self.peak_warehouse / gib, 2),
                "peak_scratch_gib": round(self.peak_scratch / gib, 2),
                "final_warehouse_gib": round(self._size(self.warehouse) / gib, 2)}


def run_inner(parquet: Path, out: Path, url: str, memory_limit: str | None = None,
              keep: bool = False, compress_ids: bool = False) -> None:
    """Load the generator's file as canonical ``events``, run prepare, then paths and linear
    credits (what the reference computes too); write counts and timings. ``keep``: leave the
    warehouse file for :func:`persistence_floor`."""

    from touchline import engine, store
    from touchline.config import ConversionSpec, Settings
    from touchline.pipeline import channel_credits, run
    from touchline.prepare import run_prepare

    db = _warehouse()
    _remove_warehouse()
    # what the reference computes: each person's first purchase, its whole history, linear
    first_purchase = ConversionSpec(name="purchase", revenue=True, value="revenue",
                                    count="first", lookback_days=None)
    settings = Settings(database_url=url.replace("{db}", str(db)), temp_directory=DATA / "tmp",
                        memory_limit=memory_limit, compress_id_columns=compress_ids,
                        conversions=[first_purchase],
                        attribution_models=["linear"])
    con = engine.connect(settings=settings)
    disk = DiskSampler(db, DATA / "tmp").start()
    t0 = time.perf_counter()
    load_generator_events(con, parquet)
    # the canonical columns ingest writes and the generator lacks, added before prepare (as
    # `touchline ingest` leaves them), so prepare reads the table a user's warehouse holds;
    # `run` added them after prepare before, inside the paths-and-credits time
    store.init(con)
    loaded = time.perf_counter() - t0
    # the generator's clock runs past today for long-lived people: pin the run's "now" to the
    # data's end, else drop_future_timestamps rightly rejects those rows and counts differ
    end = con.table("events").timestamp.max().execute()
    result = run_prepare(con, settings, now=end.to_pydatetime() + timedelta(days=1))
    t1 = time.perf_counter()
    report = run(con, settings, prepare=False)
    credits = channel_credits(con, "purchase", "linear")
    attributed = time.perf_counter() - t1
    disk.stop()
    sessions = con.table("sessions")
    by_channel = sessions.group_by("channel").aggregate(n=sessions.count()).to_pandas()
    counts = {
        "unique_events": result.counts["touchpoints"],
        "sessions": result.counts["sessions"],
        "anonymous_ids": int(sessions.anonymous_id.nunique().execute()),
        "persons": result.counts["persons"],
        "converting_journeys": int(report.conversions.conversions.sum()),
        "rejects_by_reason": result.rejects_by_reason,
        "sessions_by_channel": {str(r.channel): int(r.n) for r in by_channel.itertuples()},
        "linear_credit": {str(r.channel): round(float(r.conversions), 6)
                          for r in credits.itertuples()},
    }
    out.write_text(json.dumps({
        "engine": engine.engine_name(con),
        "load_seconds": round(loaded, 2), "prepare_seconds": round(result.seconds, 2),
        "paths_credits_seconds": round(attributed, 2),
        "steps": {s.name: round(s.seconds, 2) for s in result.steps}, "counts": counts,
        "disk": disk.report(),
    }, indent=2))
    con.disconnect()
    if not keep:
        _remove_warehouse()


FLOOR_TABLES = ("touches", "sessions")


def persistence_floor(db: Path, out: Path, memory_limit: str | None = None) -> None:
    """Seconds to write each of :data:`FLOOR_TABLES` again, copied from the finished table in
    the same warehouse file: the cost of persisting them, without any of the work that made
    them."""
    import duckdb

    con = duckdb.connect(str(db), config={"memory_limit": memory_limit} if memory_limit else {})
    con.execute("SET enable_progress_bar = false")
    seconds = {}
    for name in FLOOR_TABLES:
        t0 = time.perf_counter()
        con.execute(f'CREATE TABLE floor_copy AS SELECT * FROM "{name}"')
        seconds[name] = round(time.perf_counter() - t0, 2)
        con.execute("DROP TABLE floor_copy")
        con.execute("CHECKPOINT")
    con.close()
    out.write_text(json.dumps(seconds))


DUCKDB_URL = "duckdb:///{db}"
SPARK_URL = "spark://local[2]"
PARITY_KEYS = ("unique_events", "sessions", "anonymous_ids", "persons", "converting_journeys",
               "rejects_by_reason", "sessions_by_channel", "linear_credit")


def _events_file(events: float) -> tuple[str, Path]:
    label = f"{events / 1e6:g}M"
    parquet = DATA / f"events_{label}.parquet"
    DATA.mkdir(exist_ok=True)
    if not parquet.exists():
        import subprocess

        subprocess.run([PYTHON, str(SHARED_BENCH / "gen_events.py"), "--events", str(events),
                        "--out", str(parquet)], check=True)
    return label, parquet


def _ours(label: str, parquet: Path, url: str, tag: str, memory_limit: str | None = None,
          keep: bool = False, compress_ids: bool = False) -> tuple[dict, dict]:
    out = DATA / f"touchline_prepare_{tag}_{label}.json"
    limit = ["--memory-limit", memory_limit] if memory_limit else []
    record = timed(f"prepare/touchline-{tag}/{label}", [
        PYTHON, str(Path(__file__).resolve()), "--run", str(parquet), "--out", str(out),
        "--url", url, *limit, *(["--keep"] if keep else []),
        *(["--compress-ids"] if compress_ids else [])], timeout=3 * 3600)
    return record, json.loads(out.read_text())


def _floor(memory_limit: str | None) -> dict[str, float]:
    """:func:`persistence_floor` in its own process (not inside the timed run), then the
    warehouse file is removed."""
    import subprocess

    out = DATA / "prepare_floor.json"
    limit = ["--memory-limit", memory_limit] if memory_limit else []
    try:
        subprocess.run([PYTHON, str(Path(__file__).resolve()), "--floor", str(_warehouse()),
                        "--out", str(out), *limit], check=True)
    finally:
        _remove_warehouse()
    return json.loads(out.read_text())


def spark_parity(events: float) -> str:
    """The same prepare + paths + credits on Spark local[2] and on DuckDB: outputs and time."""
    label, parquet = _events_file(events)
    duck, duck_inner = _ours(label, parquet, DUCKDB_URL, "duckdb")
    spark, spark_inner = _ours(label, parquet, SPARK_URL, "spark")
    # goal 6 of issue 19: the hand-written PySpark DataFrame pipeline on the same master
    ref_out = DATA / f"ref_pyspark_{label}.json"
    ref = timed(f"prepare/reference-pyspark/{label}", [
        PYTHON, str(SHARED_BENCH / "pipelines.py"), "--engine", "pyspark", "--input",
        str(parquet), "--out", str(ref_out)], env={"SPARK_MASTER": "local[2]"})
    ref_converters = json.loads(ref_out.read_text()).get("converters", 0)
    rows = []
    for key in PARITY_KEYS:
        a, b = duck_inner["counts"][key], spark_inner["counts"][key]
        shown = f"{a:,}" if isinstance(a, int) else f"{len(a)} entries"
        rows.append(f"| {key} | {shown} | {'yes' if a == b else '**no**'} |")
    ratio = spark["wall_s"] / duck["wall_s"]
    ref_ratio = spark["wall_s"] / ref["wall_s"]
    return f"""### Spark local[2] at {label} events

The same run (load, prepare, paths, linear credits) with `database_url = spark://local[2]`:
**Spark / DuckDB wall time {ratio:.2f}×** ({spark['wall_s']} s, peak RSS with the JVM
{spark['tree_peak_rss_mib']} MiB, vs {duck['wall_s']} s, {duck['tree_peak_rss_mib']} MiB).

Against the hand-written PySpark reference (`../shared/bench/pipelines.py --engine pyspark`,
`local[2]`, same file, same run: {ref['wall_s']} s, peak RSS {ref['tree_peak_rss_mib']} MiB,
others' CPU {ref.get('others_cpu_s')} s): **touchline on Spark / PySpark reference
{ref_ratio:.2f}×** (goal ≤ 1.5× at 10M events, issue 19 goal 6; measured here at {label}).
Converting journeys: touchline {spark_inner['counts']['converting_journeys']:,}, reference
converters {ref_converters:,}.

| output | DuckDB | Spark identical |
|---|---|---|
{chr(10).join(rows)}
"""


def _counts_and_steps(checks: dict, inner: dict) -> str:
    """The counts against the truth and the per-step seconds, as two Markdown tables."""
    rows = "\n".join(f"| {k} | {a:,} | {b:,} | {'yes' if ok else '**no**'} |"
                     for k, (a, b, ok) in checks.items())
    steps = "\n".join(f"| {k} | {v:.1f} |" for k, v in inner["steps"].items())
    return ("| count | touchline | truth.json | equal |\n|---|---|---|---|\n" + rows
            + "\n\n| step | seconds |\n|---|---|\n" + steps)


def _doubled(memory_limit: str) -> str:
    """``"6GB"`` → ``"12GB"``: a DuckDB memory_limit twice as large, in the same unit."""
    found = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", memory_limit)
    if found is None:
        raise ValueError(f"not a memory limit: {memory_limit!r}")
    number, unit = found.groups()
    return f"{float(number) * 2:g}{unit}"


def _available_gib() -> float:
    """Memory the kernel could give a new process now (``MemAvailable``), in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024 ** 2
    return 0.0


#: free memory the reference needs to run without a limit at 50M events (it took 18 GiB)
UNLIMITED_REFERENCE_FREE_GIB = 20


def _reference(label: str, parquet: Path, ref_out: Path, ref_db: Path,
               memory_limit: str | None) -> tuple[dict | None, list[str]]:
    """The persisting reference's timed run under ``memory_limit``, else under twice it, else
    without one; returns the record that finished (``None`` when none did) and what each
    earlier attempt died of, so a failure is reported, never hidden.

    Why the retries: at 50M events the hand-written reference runs out of memory under 6, 7
    and 12 GB (its dedupe and session windows cannot spill enough) and took 18 GiB without a
    limit, which thrashes this 24 GiB machine when anything else runs: it runs unlimited only
    when :data:`UNLIMITED_REFERENCE_FREE_GIB` are free.
    """
    def run(limit: str | None) -> dict:
        env = {"PERSIST_DB": str(ref_db), **({"DUCKDB_MEMORY_LIMIT": limit} if limit else {})}
        try:
            return timed(f"prepare/reference-persist/{label}" + (f"/{limit}" if limit else ""), [
                PYTHON, str(SHARED_BENCH / "pipelines.py"), "--engine", "duckdb-persist",
                "--input", str(parquet), "--out", str(ref_out)], env=env)
        finally:
            for stale in (ref_db, ref_db.with_name(ref_db.name + ".wal")):
                stale.unlink(missing_ok=True)

    attempts = [memory_limit, _doubled(memory_limit), None] if memory_limit else [None]
    failures: list[str] = []
    for limit in attempts:
        free_gib = _available_gib()
        if limit is None and memory_limit and free_gib < UNLIMITED_REFERENCE_FREE_GIB:
            failures.append(f"not run without a limit: {free_gib:.0f} GiB free, it needs "
                            f"about {UNLIMITED_REFERENCE_FREE_GIB}")
            break
        try:
            return run(limit), failures
        except RuntimeError as exc:
            if limit is None or "Out of Memory" not in str(exc):
                raise
            failures.append(f"out of memory under memory_limit {limit}")
            log.warning("reference: %s", failures[-1])
    return None, failures


def main(events: float, spark_events: float, memory_limit: str | None = None,
         compress_ids: bool = False) -> None:
    label, parquet = _events_file(events)
    truth = json.loads(parquet.with_suffix(".truth.json").read_text())
    ref_out = DATA / f"ref_prepare_{label}.json"
    # the reference that also stores its touches and sessions in a DuckDB file (issue 19): a
    # run that keeps its results cannot be compared with one that keeps nothing
    ref_db = DATA / f"ref_prepare_{label}.duckdb"
    ref, ref_failures = _reference(label, parquet, ref_out, ref_db, memory_limit)
    ours, inner = _ours(label, parquet, DUCKDB_URL, "duckdb", memory_limit, keep=True,
                        compress_ids=compress_ids)
    writes = _floor(memory_limit)
    floor = inner["load_seconds"] + sum(writes.values())
    reference = json.loads(ref_out.read_text()) if ref is not None else {}
    counts = inner["counts"]
    checks = {k: (counts[k], truth[k], counts[k] == truth[k])
              for k in ("unique_events", "sessions", "anonymous_ids")}
    ratio = ours["wall_s"] / ref["wall_s"] if ref is not None else None
    parity = spark_parity(spark_events) if spark_events else ""
    data = {"machine": machine(), "events": events, "truth": truth, "reference": ref,
            "reference_counts": {k: reference.get(k) for k in
                                 ("events_dedup", "sessions", "anonymous_ids", "persons",
                                  "converters")},
            "reference_failures": ref_failures,
            "touchline": ours, "touchline_inner": inner, "ratio": ratio, "checks": checks,
            "compress_ids": compress_ids,
            "persistence_floor": {"load_seconds": inner["load_seconds"], "writes": writes,
                                  "seconds": floor,
                                  "ratio": floor / ref["wall_s"] if ref else None}}
    limited = f" (memory_limit {memory_limit})" if memory_limit else ""
    compressed = ", ids compressed" if compress_ids else ""
    flags = (f" --memory-limit {memory_limit}" if memory_limit else "") + (
        " --compress-ids" if compress_ids else "")
    ours_row = (f"| touchline{limited}{compressed} | {ours['wall_s']} | "
                f"{ours['tree_peak_rss_mib']} | {ours.get('others_cpu_s')} |")
    failed = "; ".join(ref_failures)
    if ref is None:
        ref_row = f"| reference (DuckDB SQL, stored) | did not finish: {failed} | | |"
        verdict = (f"**No ratio: the reference could not run** ({failed}). touchline finished "
                   f"under memory_limit {memory_limit}.")
        floor_line = (f"**Persistence floor:** loading the events ({inner['load_seconds']} s) "
                      f"and writing the two large prepared tables again ("
                      + ", ".join(f"`{k}` {v} s" for k, v in writes.items())
                      + f") takes {floor:.1f} s.")
    else:
        ref_limit = "" if not memory_limit else (
            f" (memory_limit {ref['label'].rsplit('/', 1)[-1]})" if ref_failures
            else limited)
        ref_row = (f"| reference (DuckDB SQL, stored){ref_limit} | {ref['wall_s']} | "
                   f"{ref['tree_peak_rss_mib']} | {ref.get('others_cpu_s')} |")
        verdict = (f"**Ratio touchline / reference: {ratio:.2f}×** (goal ≤ 1.5×, issue 19)."
                   + (f" The reference first failed: {failed}." if ref_failures else ""))
        floor_line = (f"**Persistence floor: {floor / ref['wall_s']:.2f}× the reference.** "
                      f"Loading the events into the warehouse ({inner['load_seconds']} s) and "
                      "writing the two large prepared tables once more, copied from the "
                      "finished ones in a separate process ("
                      + ", ".join(f"`{k}` {v} s" for k, v in writes.items())
                      + f"), takes {floor:.1f} s: what any run that keeps its results in the "
                      "warehouse pays before it computes anything; the reference pays its own "
                      "share of it.")
    converters = reference.get("converters")
    converters = f"{converters:,}" if converters is not None else "not run"

    md = f"""## Prepare ({label} events, issue 4)

`python benchmarks/bench_prepare.py --events {events:g}{flags}`: touchline (load the generator's
Parquet as `events`, every prepare step — clean, bots, standardise, dedupe, sessions, channels,
identity graph, accounts — then person journeys, paths and linear credits) against
`../shared/bench/pipelines.py --engine duckdb-persist` (dedupe, sessions, channel, stitch,
paths, linear credits; touches and sessions stored as tables in a DuckDB file{limited}) on the
same `gen_events.py` file, same run.

| run | wall s | peak RSS MiB | others' CPU s |
|---|---|---|---|
{ref_row}
{ours_row}

{verdict}
Inside touchline: load {inner['load_seconds']} s, prepare {inner['prepare_seconds']} s,
paths + linear credits {inner['paths_credits_seconds']} s.
Converting journeys: {counts['converting_journeys']:,} (reference converters: {converters};
touchline stitches persons by its identity graph, the reference by `min(user_id)` per
anonymous id).

{floor_line}

Disk (sampled every second): the warehouse file peaked at
{inner['disk']['peak_warehouse_gib']} GiB ({inner['disk']['final_warehouse_gib']} GiB at the
end), the spill folder (`temp_directory`) at {inner['disk']['peak_scratch_gib']} GiB.

{_counts_and_steps(checks, inner)}

{parity}"""
    # the 10M run is the standing figure; other sizes (50M with a memory limit) sit beside it
    write_result("prepare" if label == "10M" else f"prepare_{label}", md, data)
    log.info("prepare %s: ratio %s", label, f"{ratio:.2f}" if ratio else "none")


#: the run a scaling run is compared with, and the bound on its time (issue 19 goal 3):
#: linear in events plus 10 %
SCALING_BASE_EVENTS = 50e6
SCALING_SLACK = 1.1
RSS_BOUND_MIB = 8 * 1024


def _run_row(name: str, events: float, record: dict) -> str:
    return (f"| {name} | {events:,.0f} | {record['wall_s']} | {record['tree_peak_rss_mib']} | "
            f"{record.get('others_cpu_s')} |")


def scaling(events: float, memory_limit: str | None, compress_ids: bool = False) -> None:
    """touchline alone at ``events`` (200M), against the stored 50M run: its time at most
    ``events / 50M × 1.1`` times that run's, peak RSS ≤ 8 GiB, counts equal the truth.

    On request only (not in ``make bench``: over an hour here). No reference runs: the
    hand-written one cannot finish at 50M under 6 or 7 GB and took 18 GiB without a limit,
    so at 200M it cannot run on this machine at all. The 50M figure comes from
    ``bench-data/prepare_50M.json`` (``--events 50e6 --memory-limit 6GB``); run that first,
    on the same machine.
    """
    label, parquet = _events_file(events)
    truth = json.loads(parquet.with_suffix(".truth.json").read_text())
    base_label = f"{SCALING_BASE_EVENTS / 1e6:g}M"
    base_file = DATA / f"prepare_{base_label}.json"
    if not base_file.exists():
        raise SystemExit(f"{base_file} is missing: run `python benchmarks/bench_prepare.py "
                         f"--events {SCALING_BASE_EVENTS:g} --memory-limit 6GB "
                         "--spark-events 0` first")
    base = json.loads(base_file.read_text())
    if base.get("compress_ids", False) != compress_ids:
        raise SystemExit(f"{base_file} was run {'with' if base.get('compress_ids') else 'without'}"
                         " --compress-ids: run both sizes the same way")
    ours, inner = _ours(label, parquet, DUCKDB_URL, "duckdb", memory_limit,
                        compress_ids=compress_ids)
    counts = inner["counts"]
    checks = {k: (counts[k], truth[k], counts[k] == truth[k])
              for k in ("unique_events", "sessions", "anonymous_ids")}
    bound = events / SCALING_BASE_EVENTS * SCALING_SLACK
    ratio = ours["wall_s"] / base["touchline"]["wall_s"]
    rss = ours["tree_peak_rss_mib"]
    disk = inner["disk"]
    compressed_flag, compressed = (" --compress-ids", ", ids compressed") if compress_ids else (
        "", "")
    md = f"""## Prepare at {label} events: time linear in events (issue 19 goal 3)

On request, not in `make bench` (over an hour here):
`python benchmarks/bench_prepare.py --events {events:g} --scaling --memory-limit
{memory_limit}{compressed_flag}`. touchline alone (the hand-written reference cannot run
at this size on this machine: at 50M it ran out of memory under 6 and 7 GB and took 18 GiB
without a limit).

| run | events | wall s | peak RSS MiB | others' CPU s |
|---|---:|---:|---:|---:|
{_run_row(f"touchline, stored {base_label} run", SCALING_BASE_EVENTS, base["touchline"])}
{_run_row(f"touchline (memory_limit {memory_limit}{compressed})", events, ours)}

**Time {ratio:.2f}× the {base_label} run** (goal ≤ {bound:.1f}×: {'met' if ratio <= bound else
'**not met**'}); **peak RSS {rss / 1024:.2f} GiB** (goal ≤ 8 GiB: {'met' if rss <= RSS_BOUND_MIB
else '**not met**'}). Disk: the warehouse file peaked at {disk['peak_warehouse_gib']} GiB
({disk['final_warehouse_gib']} GiB at the end), the spill folder at {disk['peak_scratch_gib']}
GiB. Inside: load {inner['load_seconds']} s, prepare {inner['prepare_seconds']} s, paths +
linear credits {inner['paths_credits_seconds']} s.

{_counts_and_steps(checks, inner)}
"""
    write_result(f"prepare_{label}", md, {"machine": machine(), "events": events,
                                          "base": base["touchline"], "touchline": ours,
                                          "touchline_inner": inner, "ratio": ratio,
                                          "bound": bound, "checks": checks,
                                          "compress_ids": compress_ids})
    log.info("prepare %s: %.2f x the %s run, peak RSS %.2f GiB", label, ratio, base_label,
             rss / 1024)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=float, default=10e6)
    ap.add_argument("--spark-events", type=float, default=1e6,
                    help="size of the Spark-vs-DuckDB parity run (0: skip)")
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--url", default=DUCKDB_URL)
    ap.add_argument("--keep", action="store_true", help="--run: keep the warehouse file")
    ap.add_argument("--floor", type=Path, help="measure the persistence floor in this file")
    # DuckDB's limit covers its buffers, not the process: 6GB keeps 50M events under 8 GB RSS
    ap.add_argument("--memory-limit", help="DuckDB memory_limit for touchline's run, e.g. 6GB")
    ap.add_argument("--compress-ids", action="store_true",
                    help="Settings.compress_id_columns for touchline's run: its warehouse "
                         "about half the size, for a slower write (a 200M run's disk)")
    ap.add_argument("--scaling", action="store_true",
                    help="on request (issue 19 goal 3): touchline alone at --events (200M), "
                         "its time against the stored 50M run")
    args = ap.parse_args()
    if args.run:
        run_inner(args.run, args.out, args.url, args.memory_limit, keep=args.keep,
                  compress_ids=args.compress_ids)
    elif args.floor:
        persistence_floor(args.floor, args.out, args.memory_limit)
    elif args.scaling:
        scaling(args.events, args.memory_limit, args.compress_ids)
    else:
        main(args.events, args.spark_events, args.memory_limit, args.compress_ids)
