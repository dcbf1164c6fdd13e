"""Benchmark: start-up of ``import touchline`` and ``touchline --help`` (issue 19, goal 7).

The goal: neither ``import touchline`` nor ``touchline --help`` (or a command's ``--help``)
imports SciPy, PySpark, the collector's server stack (Starlette, uvicorn, msgspec) or the
engine (DuckDB, Ibis, pandas); each heavy import happens in the command that uses it.
``tests/test_layout.py`` checks the modules; this script measures what that buys. Each command
runs ``--repeat`` times in a fresh interpreter (the median wall time is reported), against two
references measured in the same run:

- the floor: a bare interpreter (``python -c pass``): no start-up can be cheaper;
- the heavy stack: importing what the goal keeps out (``scipy.optimize``, ``pyspark.sql``,
  ``starlette``, ``uvicorn``, ``msgspec``, Ibis's DuckDB backend, pandas), which a CLI that
  loaded everything up front pays on every ``--help``.

The ratio reported is each command's time over the floor, and the heavy stack's time beside
it. The modules each command leaves loaded are listed (must be none of the heavy ones), and
the largest cumulative imports of ``touchline --help`` come from ``python -X importtime``.

    python benchmarks/bench_startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import PYTHON, ROOT, machine, write_result

REPEAT_DEFAULT = 15
#: what the goal keeps out of ``import touchline`` and ``touchline --help``
HEAVY = ("scipy", "pyspark", "starlette", "uvicorn", "msgspec", "duckdb", "ibis", "pandas")


def _help(*command: str) -> str:
    """``touchline COMMAND --help`` in a fresh interpreter, through the installed entry
    point's function."""
    argv = ["touchline", *command, "--help"]
    return (f"import sys\nsys.argv = {argv!r}\nfrom touchline.cli import app\n"
            "try:\n    app()\nexcept SystemExit as done:\n    assert done.code in (0, None)\n")


HELP = _help()
#: the commands whose start-up is measured; the labels with ``touchline`` must load no HEAVY
COMMANDS: dict[str, str] = {
    "bare interpreter (floor)": "pass",
    "import touchline": "import touchline",
    "touchline --help": HELP,
    "touchline ingest --help": _help("ingest"),
    "touchline attribute --help": _help("attribute"),
    "heavy stack (kept out)": "import scipy.optimize, pyspark.sql, starlette.applications, "
                              "uvicorn, msgspec, ibis.backends.duckdb, pandas",
}


def _seconds(code: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``code`` in a fresh interpreter: the CPU time
    holds when other work shares the cores, the wall time is what a user waits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _heavy_loaded(code: str) -> list[str]:
    probe = (code + "\nimport sys\nprint(' '.join(m for m in " + repr(HEAVY)
             + " if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([PYTHON, "-c", probe], cwd=ROOT, check=True, capture_output=True,
                          text=True)
    return done.stderr.strip().splitlines()[-1].split() if done.stderr.strip() else []


def _largest_imports(code: str, top: int = 8) -> list[tuple[str, float]]:
    """The ``top`` top-level packages by cumulative import time (``-X importtime``), ms."""
    done = subprocess.run([PYTHON, "-X", "importtime", "-c", code], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    cumulative: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if not cum.isdigit() or name.startswith(" ") or "." in name.strip():
            continue
        # a top-level package's line is its own cumulative time (its submodules are inside)
        cumulative[name.strip()] = max(cumulative.get(name.strip(), 0.0), int(cum) / 1000)
    return sorted(cumulative.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=REPEAT_DEFAULT)
    args = parser.parse_args()
    for code in COMMANDS.values():  # warm the file cache, untimed
        _seconds(code)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in COMMANDS}
    for _ in range(args.repeat):  # interleaved: a busy moment hits every command alike
        for label, code in COMMANDS.items():
            times[label].append(_seconds(code))
    median = {label: statistics.median(wall for wall, _ in ts) for label, ts in times.items()}
    cpu = {label: statistics.median(c for _, c in ts) for label, ts in times.items()}
    floor = median["bare interpreter (floor)"]
    cpu_floor = cpu["bare interpreter (floor)"]
    loaded = {label: _heavy_loaded(code) for label, code in COMMANDS.items()
              if label.startswith(("import touchline", "touchline "))}
    for label, modules in loaded.items():
        if modules:
            raise SystemExit(f"{label} imported {modules}: the start-up goal is broken")
    largest = _largest_imports(HELP)
    rows = "\n".join(
        f"| {label} | {median[label] * 1000:.0f} ms | **{median[label] / floor:.2f}×** | "
        f"{cpu[label] * 1000:.0f} ms | {cpu[label] / cpu_floor:.2f}× | "
        f"{', '.join(loaded[label]) or 'none' if label in loaded else '–'} |"
        for label in COMMANDS)
    imports = ", ".join(f"{name} {ms:.0f} ms" for name, ms in largest)
    md = f"""## Start-up: `import touchline` and `touchline --help` (issue 19, goal 7)

`python benchmarks/bench_startup.py` (or `python benchmarks/run.py startup`): each command in
a fresh interpreter, {args.repeat} interleaved runs, median wall and CPU (user + system)
time; ratio against a bare interpreter (`python -c pass`) in the same run.
The goal: no `touchline` line imports {', '.join(HEAVY)}; each loads in the
command that uses it (`tests/test_layout.py` checks it on every `make test`). The heavy
stack's own import time is measured beside it: what a CLI that loaded everything up front
would add to every `--help`. Machine: {machine()}.

| command | median wall | ratio to bare | median CPU | CPU ratio | heavy modules loaded |
|---|---:|---:|---:|---:|---|
{rows}

Largest imports of `touchline --help` (`python -X importtime`, cumulative, one run):
{imports}.
"""
    write_result("startup", md, {"machine": machine(), "repeat": args.repeat,
                                 "seconds": times, "median": median, "cpu": cpu, "loaded": loaded,
                                 "largest_imports": largest})
    print(md)


if __name__ == "__main__":
    main()
