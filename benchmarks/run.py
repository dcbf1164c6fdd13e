"""`make bench`: run every benchmarks/bench_*.py (or those named) and rebuild BENCHMARKS.md.

Each benchmark writes ``benchmarks/results/<name>.md``; this script concatenates them under a
header with the machine and the command. Run one alone with
``python benchmarks/run.py ingest`` (the others keep their last results).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import PYTHON, RESULTS, ROOT, machine


def main(names: list[str]) -> int:
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        if subprocess.run([PYTHON, str(script)], cwd=ROOT).returncode:
            failed.append(script.name)
    parts = [
        "# Benchmarks",
        "",
        f"Rebuilt {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` "
        "(`python benchmarks/run.py [name...]`). Machine: " + machine() + ".",
        "",
        "Every figure is a ratio against a reference measured in the same run; absolute times",
        "drift on shared machines. Timings come from `../shared/bench/timed.py` (wall time, peak",
        "RSS of the whole process tree).",
        "",
    ]
    for result in sorted(RESULTS.glob("*.md")):
        parts += [result.read_text().rstrip(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
