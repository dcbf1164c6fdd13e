"""Simulator benchmark: events per second of `touchline simulate` at 1M and 10M events, as
NDJSON (gzip) and as Parquet, against ``../shared/bench/gen_events.py`` writing the same number
of events in the same run (a much simpler generator: no causal model, counterfactuals,
identities or nested Segment JSON), with peak memory.

``BENCH_SIMULATE_EVENTS`` (default ``1e6,10e6``) and ``BENCH_SIMULATE_FORMATS`` (default
``ndjson,parquet``) override the sizes and formats.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA, PYTHON, SHARED_BENCH, machine, timed, write_result

SIZES = [int(float(s)) for s in os.environ.get("BENCH_SIMULATE_EVENTS", "1e6,10e6").split(",")]
FORMATS = os.environ.get("BENCH_SIMULATE_FORMATS", "ndjson,parquet").split(",")
EVENTS_PER_PERSON = 18.6  # B2C default parameters, measured; the run reports the real count
SEED = 7


def _tag(events: int) -> str:
    return f"{events // 1_000_000}M" if events >= 1_000_000 else f"{events // 1000}k"


def _simulate(events: int, fmt: str) -> dict:
    out = DATA / f"sim-{_tag(events)}-{fmt}"
    shutil.rmtree(out, ignore_errors=True)
    people = round(events / EVENTS_PER_PERSON)
    code = (
        "import json; from touchline.simulate import simulate; "
        f"s = simulate({people}, {SEED}, {str(out)!r}, fmt={fmt!r}); "
        "print(json.dumps({'events': s.events_written, 'people': s.people, "
        "'seconds': s.seconds}))"
    )
    record = timed(f"simulate/{fmt}/{_tag(events)}", [PYTHON, "-c", code])
    record["events"] = record["inner"]["events"]
    record["bytes"] = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out, ignore_errors=True)
    return record


def _reference(events: int) -> dict:
    out = DATA / f"sim-ref-{_tag(events)}.parquet"
    record = timed(f"simulate/reference/{_tag(events)}", [
        PYTHON, str(SHARED_BENCH / "gen_events.py"), "--events", str(events), "--out", str(out)])
    truth = out.with_name(out.name.removesuffix(".parquet") + ".truth.json")
    record["events"] = events
    out.unlink(missing_ok=True)
    truth.unlink(missing_ok=True)
    return record


def main() -> None:
    DATA.mkdir(exist_ok=True)
    rows, data = [], {}
    for size in SIZES:
        reference = _reference(size)
        data[_tag(size)] = {"reference": reference}
        ref_rate = reference["events"] / reference["wall_s"]
        for fmt in FORMATS:
            ours = _simulate(size, fmt)
            data[_tag(size)][fmt] = ours
            rate = ours["events"] / ours["wall_s"]
            rows.append(
                f"| {_tag(size)} | {fmt} | {ours['events']:,} | {ours['wall_s']:.1f} s | "
                f"{rate:,.0f} | {ref_rate:,.0f} | **{rate / ref_rate:.2f}×** | "
                f"{ours['cpu_s']:.0f} s | {ours['tree_peak_rss_mib'] / 1024:.2f} GiB | "
                f"{ours['bytes'] / 2**20:,.0f} MiB | {ours['others_cpu_s']:.0f} s |")
    md = "\n".join([
        "## Simulator (issue 3)",
        "",
        "Command: `python benchmarks/run.py simulate` (B2C, seed 7, default chunk of 50k "
        "people). Reference: `../shared/bench/gen_events.py` writing the same number of events "
        "as Parquet in the same run (flat rows, no causal model, no nested JSON); the ratio is "
        "touchline's events/s over the reference's. NDJSON is gzip level 1, compressed by two "
        "threads; CPU is user+sys of the whole run. `others` is CPU the rest of the machine "
        "used meanwhile (large = disturbed run).",
        "",
        "| events | format | written | wall | events/s | reference events/s | ratio | CPU | "
        "peak RSS | output | others |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Machine: {machine()}.",
    ])
    write_result("simulate", md, data)
    print(md)
    print(json.dumps({k: {f: v[f]["wall_s"] for f in v} for k, v in data.items()}))


if __name__ == "__main__":
    main()
