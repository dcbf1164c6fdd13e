"""Shared helpers for the benchmarks: machine facts, timed runs, result files.

Every timing goes through ``../shared/bench/timed.py`` (wall time, peak RSS of the process tree,
CPU used by the rest of the machine), and every figure reported is a ratio against a reference
run in the same invocation: absolute times drift on shared machines.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"
DATA = ROOT / "bench-data"
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable


def machine() -> str:
    """One line: cores, memory, CPU model, Python."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kib = 0
    return (f"{os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB, {cpu}, {platform.machine()}, "
            f"Python {platform.python_version()}")


def timed(label: str, cmd: list[str], *, timeout: float = 1800, env: dict[str, str] | None = None
          ) -> dict:
    """Run ``cmd`` under shared/bench/timed.py; return its JSON record."""
    DATA.mkdir(exist_ok=True)
    out = DATA / "timings.jsonl"
    before = out.read_text().count("\n") if out.exists() else 0
    subprocess.run(
        [PYTHON, str(SHARED_BENCH / "timed.py"), "--label", label, "--out", str(out),
         "--timeout", str(timeout), "--", *cmd],
        check=False, env={**os.environ, **(env or {})},
    )
    lines = out.read_text().splitlines()
    if len(lines) <= before:
        raise RuntimeError(f"timed.py wrote no record for {label}")
    record = json.loads(lines[-1])
    if record["status"] != "ok":
        raise RuntimeError(f"{label} failed: {record.get('stderr_tail', record['status'])}")
    return record


def write_result(name: str, markdown: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    DATA.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    (DATA / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
