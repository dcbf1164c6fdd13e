"""Attribution accuracy against ground truth: L1 share distance of every model, seed by seed.

Data sets (each with a truth no model reads):

* ``gen_paths``: ``../shared/bench/gen_paths.py`` path files (``--journeys``, default 100k) for
  each seed of ``--gen-seeds``; truth: ``expected_conversions_lost_without_channel``;
* ``b2c`` / ``b2b``: the simulator's true paths (``paths.csv``) for each seed of
  ``--sim-seeds``, at the demo's sizes (20,000 people; 3,000 people in 300 accounts); truth:
  ``incremental_conversions`` of ``truth.json``.

Every registered model that runs on aggregated paths is scored, plus ``auto`` (the model that
:func:`touchline.attribution.select.choose_model` picks from the user's own journeys, when that
module exists). L1 = Σ|credit share − truth share| (0 perfect, 2 disjoint).

    python benchmarks/bench_accuracy.py                  # or: python benchmarks/run.py accuracy
    python benchmarks/bench_accuracy.py --journeys 1000000 --gen-seeds 7

Writes ``benchmarks/results/accuracy.md`` and ``bench-data/accuracy.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA, PYTHON, SHARED_BENCH, machine, write_result

GEN_JOURNEYS = 100_000
GEN_SEEDS = (7, 8, 9)
SIM_SEEDS = (7, 8, 9, 10, 11)
B2C_PEOPLE = 20_000
B2B_PEOPLE, B2B_ACCOUNTS = 3_000, 300
BASELINE = "last_non_direct"


def _gen_paths(journeys: int, seed: int) -> tuple[Path, Path]:
    folder = DATA / "accuracy"
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"gen_paths_{journeys}_{seed}.csv"
    truth = folder / f"gen_paths_{journeys}_{seed}.truth.json"
    if not (paths.exists() and truth.exists()):
        subprocess.run(
            [PYTHON, str(SHARED_BENCH / "gen_paths.py"), "--journeys", str(journeys), "--seed",
             str(seed), "--out", str(paths), "--truth", str(truth)],
            check=True, stderr=subprocess.DEVNULL,
        )
    return paths, truth


def _simulated(kind: str, seed: int) -> tuple[Path, Path]:
    from touchline.simulate import simulate

    folder = DATA / "accuracy" / f"{kind}_{seed}"
    if not (folder / "truth.json").exists():
        if kind == "b2b":
            simulate(B2B_PEOPLE, seed, folder, b2b=True, accounts=B2B_ACCOUNTS, fmt="parquet")
        else:
            simulate(B2C_PEOPLE, seed, folder, fmt="parquet")
    return folder / "paths.csv", folder / "truth.json"


def score_dataset(paths_file: Path, truth_file: Path) -> dict[str, Any]:
    """L1 (and worst channel) of every model on one data set; ``auto`` with what it chose."""
    from touchline.attribution import MODELS, compare, evaluate, load_truth, read_path_file

    paths = read_path_file(paths_file)
    truth = load_truth(truth_file)
    models = [m for m in sorted(MODELS) if not MODELS[m].needs_ages]
    started = time.perf_counter()
    table = compare(paths, models)
    seconds = {"all models": time.perf_counter() - started}
    chosen = None
    try:
        from touchline.attribution.select import choose_model
    except ImportError:
        choose_model = None
    if choose_model is not None:
        started = time.perf_counter()
        choice = choose_model(paths)
        seconds["auto"] = time.perf_counter() - started
        table["auto"] = choice.credits.conversions
        chosen = choice.label
    ranking = evaluate(table, truth)
    return {
        "l1": dict(zip(ranking.model, ranking.l1_share.round(4), strict=True)),
        "worst": dict(zip(ranking.model, ranking.worst_channel, strict=True)),
        "auto": chosen,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "conversions": paths.total_conversions,
        "distinct_paths": paths.n_paths,
    }


def _markdown(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        "## Attribution accuracy against ground truth (issue 18)",
        "",
        "Command: `python benchmarks/run.py accuracy` "
        f"(gen_paths: {args.journeys:,} journeys, seeds {', '.join(map(str, args.gen_seeds))}; "
        f"simulator true paths: B2C {B2C_PEOPLE:,} people, B2B {B2B_PEOPLE:,} people in "
        f"{B2B_ACCOUNTS} accounts, seeds {', '.join(map(str, args.sim_seeds))}). "
        "L1 share distance to the true incremental conversions (0 = perfect, 2 = disjoint); "
        "`auto` is chosen by held-out likelihood on the journeys alone, never the truth.",
        "",
    ]
    for dataset, by_seed in results.items():
        seeds = list(by_seed)
        models = sorted(next(iter(by_seed.values()))["l1"],
                        key=lambda m: np.mean([by_seed[s]["l1"][m] for s in seeds]))
        lines += [f"### {dataset}", "",
                  "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "|---|" + "---:|" * (len(seeds) + 1)]
        for m in models:
            values = [by_seed[s]["l1"][m] for s in seeds]
            lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in values)
                         + f" | {np.mean(values):.3f} |")
        if any(by_seed[s]["auto"] for s in seeds):
            beats = sum(by_seed[s]["l1"]["auto"] < by_seed[s]["l1"][BASELINE] for s in seeds)
            lines += ["", "auto picked: " + "; ".join(f"seed {s}: {by_seed[s]['auto']}"
                                                    for s in seeds)
                      + f". auto beats {BASELINE} on {beats} of {len(seeds)} seeds."]
        lines.append("")
    lines.append(f"Machine: {machine()}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journeys", type=int, default=GEN_JOURNEYS)
    parser.add_argument("--gen-seeds", type=int, nargs="*", default=list(GEN_SEEDS))
    parser.add_argument("--sim-seeds", type=int, nargs="*", default=list(SIM_SEEDS))
    parser.add_argument("--name", default="accuracy", help="result file name")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for seed in args.gen_seeds:
        print(f"gen_paths {args.journeys} seed {seed}", flush=True)
        results.setdefault(f"gen_paths {args.journeys:,}", {})[str(seed)] = score_dataset(
            *_gen_paths(args.journeys, seed))
    for kind in ("b2c", "b2b"):
        for seed in args.sim_seeds:
            print(f"{kind} seed {seed}", flush=True)
            results.setdefault(f"simulator {kind.upper()}, true paths", {})[str(seed)] = (
                score_dataset(*_simulated(kind, seed)))
    write_result(args.name, _markdown(results, args), results)
    print((Path(__file__).parent / "results" / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
