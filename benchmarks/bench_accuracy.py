"""Attribution accuracy against ground truth: each model's L1 share distance, worst channel and
rank correlation with the truth, with their spread across seeds (issue 18, point 6).

Data sets (each with a truth no model reads):

* ``gen_paths``: ``../shared/bench/gen_paths.py`` path files (``--journeys``, default 100k) for
  each seed of ``--gen-seeds``; truth: ``expected_conversions_lost_without_channel``;
* ``b2c`` / ``b2b``: the simulator's true paths (``paths.csv``) for each seed of
  ``--sim-seeds``, at the demo's sizes (20,000 people; 3,000 people in 300 accounts; smaller
  with ``--b2c-people`` …); truth: ``incremental_conversions`` of ``truth.json``;
* unless ``--no-prepared``, also the journeys ``touchline run`` builds from the same simulated
  files (ingest → prepare → journeys into a DuckDB warehouse beside them, credits of one cheap
  model only), each unit's first conversion as the truth counts it, channel groups mapped to
  the simulator's names as the demo does. These carry touch timings, so the models that need
  them (``time_decay``, ``markov_time_decay``) are scored there too.

Every registered model the data allow is scored, plus ``auto`` (the model
:func:`touchline.attribution.select.choose_model` picks from the journeys alone) and
``markov(order=auto)`` (the Markov order 1-4 picked by held-out likelihood). Per model and data
set, across seeds:

* L1 = Σ_c |credit share − truth share| (0 perfect, 2 disjoint): mean, standard deviation and
  min–max, and each seed's value;
* worst channel: the channel with the largest mean absolute share error |credit share − truth
  share| over the seeds, named, with that error;
* Spearman's rank correlation of the channel credits with the truth: mean and minimum.

    python benchmarks/bench_accuracy.py                  # or: python benchmarks/run.py accuracy
    python benchmarks/bench_accuracy.py --journeys 1000000 --gen-seeds 7 8 9 --no-prepared
    python benchmarks/bench_accuracy.py --journeys 3000 --gen-seeds 7 --sim-seeds 7 \
        --b2c-people 2000 --b2b-people 600 --b2b-accounts 60 --name tiny --scratch

Writes ``benchmarks/results/<name>.md`` and ``bench-data/<name>.json`` (with ``--scratch``,
both to ``bench-data/``, so a trial run leaves ``BENCHMARKS.md`` alone).
"""

from __future__ import annotations

import argparse
import json
import shlex
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
AUTO = "auto"
MARKOV_AUTO = "markov(order=auto)"
#: the simulator's conversion per data set and the unit its truth counts (as the demo)
CONVERSIONS = {"b2c": ("purchase", "person"), "b2b": ("deal_won", "account")}


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


def simulator_fingerprint() -> str:
    """A short hash of the simulator's source: cached simulations are per version, so a change
    to what the simulator writes (webinars' campaign) is never scored on stale files."""
    import hashlib

    import touchline.simulate as package

    digest = hashlib.sha256()
    for source in sorted(Path(package.__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:10]


def _simulated(kind: str, seed: int, people: int, accounts: int | None) -> Path:
    """The simulator's files for one data set and seed (made once per simulator version, kept
    in bench-data)."""
    from touchline.simulate import simulate

    folder = DATA / "accuracy" / f"{kind}_{people}_{seed}_{simulator_fingerprint()}"
    if not (folder / "truth.json").exists():
        simulate(people, seed, folder, b2b=kind == "b2b", accounts=accounts, fmt="parquet")
    return folder


def _prepared_paths(kind: str, folder: Path) -> Any:
    """The journeys ``touchline run`` builds from the simulated files, as the demo scores them:
    ingest every file into a fresh DuckDB warehouse, run the stages (one cheap model, no
    bootstrap: only the journeys are read), then each unit's first conversion."""
    from touchline import engine, store
    from touchline.attribution.paths import journey_pathset
    from touchline.attribution.select import HOLDOUT_DEFAULT
    from touchline.collect.ingest import ingest_file
    from touchline.config import load_settings
    from touchline.demo import DEMO_FILES, SIMULATOR_CHANNELS, first_conversion_touches
    from touchline.pipeline import run

    warehouse = folder / "warehouse.duckdb"
    warehouse.unlink(missing_ok=True)
    settings = load_settings(database_url=f"duckdb://{warehouse}", attribution_models=["linear"],
                             default_model="linear", bootstrap_replicates=0)
    con = engine.connect(settings=settings)
    store.init(con)
    for table_kind, name in DEMO_FILES:
        stem = name.split(".", 1)[0]
        found = [f for f in (folder / name, folder / f"{stem}.parquet") if f.exists()]
        if found:
            ingest_file(con, found[0], table_kind, settings=settings, source=None)
    run(con, settings, progress=lambda _: None)
    touches = first_conversion_touches(con, *CONVERSIONS[kind])
    touches = touches.mutate(channel=touches.channel.substitute(SIMULATOR_CHANNELS))
    paths, _ = journey_pathset(touches, split_holdout=HOLDOUT_DEFAULT, open_ages=True)
    con.disconnect()
    return paths


def share_errors(credits: dict[str, float], truth: dict[str, float]) -> dict[str, float]:
    """Per channel, credit share − truth share (channels missing on a side count as 0)."""
    channels = sorted(set(credits) | set(truth))
    c = np.array([float(credits.get(ch, 0.0)) for ch in channels])
    t = np.array([float(truth.get(ch, 0.0)) for ch in channels])
    c = c / c.sum() if c.sum() else c
    t = t / t.sum() if t.sum() else t
    return dict(zip(channels, (c - t).round(6).tolist(), strict=True))


#: the reference row on simulated data: the simulator's own causal model, read from truth.json
ORACLE = "reference: the truth's own model"


def oracle_credits(paths: Any, document: dict[str, Any]) -> np.ndarray | None:
    r"""Per label of ``paths``, the credits of the simulator's own causal model (``model`` in
    truth.json: :math:`p = \sigma(\beta_0 + \eta + \sum_c \beta_c \log(1 + n_c))`, averaged
    over :math:`\eta \sim N(0, s^2)` by Gauss-Hermite quadrature) on each journey's touch
    counts, each channel's probability of necessity summed over the converted journeys, as
    ``journey_counterfactual`` credits its own fit. A reference, not a model (it reads the
    truth): how close a perfectly specified and perfectly estimated model could come, so the
    distance left between it and the truth is the data's (lost touches, channel labels,
    identity), and between it and ``auto`` the estimation's. ``None`` without a ``model``
    section (the public generator's truth)."""
    model = document.get("model")
    if not isinstance(model, dict) or "channels" not in model:
        return None
    constants, channels = model["constants"], model["channels"]
    effect = np.array([float(channels.get(str(label), {}).get("effect", 0.0))
                       for label in paths.labels])
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    eta = nodes * float(constants["propensity_sd"])
    weights = weights / weights.sum()
    n, k = paths.n_paths, paths.n_labels
    counts = np.bincount(paths.row.astype(np.int64) * k + paths.codes,
                         minlength=n * k).reshape(n, k).astype(float)

    def probability(c: np.ndarray) -> np.ndarray:
        z = float(constants["base_logit"]) + np.log1p(c) @ effect
        return np.asarray((1.0 / (1.0 + np.exp(-(z[:, None] + eta[None, :])))) @ weights)

    full = probability(counts)
    lost = np.zeros(k)
    for label in range(k):
        rows = (counts[:, label] > 0) & (paths.conversions > 0)
        without = counts[rows].copy()
        without[:, label] = 0.0
        lost[label] = paths.conversions[rows] @ ((full[rows] - probability(without))
                                                 / full[rows])
    return lost


def score_dataset(paths: Any, truth_file: Path) -> dict[str, Any]:
    """Every model's L1, rank correlation and share error per channel on one data set, with
    what ``auto`` and ``markov(order=auto)`` chose (and, on simulated data, the reference
    :data:`ORACLE`)."""
    from touchline.attribution import MODELS, attribute, compare, evaluate, load_truth
    from touchline.attribution.select import choose_model

    truth = load_truth(truth_file)
    models = [m for m in sorted(MODELS) if paths.ages is not None or not MODELS[m].needs_ages]
    started = time.perf_counter()
    table = compare(paths, models)
    seconds = {"all models": time.perf_counter() - started}
    started = time.perf_counter()
    choice = choose_model(paths)
    seconds[AUTO] = time.perf_counter() - started
    table[AUTO] = choice.credits.conversions
    started = time.perf_counter()
    ordered = attribute(paths, "markov", order="auto")
    seconds[MARKOV_AUTO] = time.perf_counter() - started
    table[MARKOV_AUTO] = ordered.conversions.to_numpy()
    oracle = oracle_credits(paths, json.loads(Path(truth_file).read_text()))
    if oracle is not None:
        table[ORACLE] = oracle
    ranking = evaluate(table, truth)
    labels = table[table.columns[0]].astype(str)
    errors = {m: share_errors(dict(zip(labels, table[m], strict=True)), dict(truth.conversions))
              for m in table.columns[1:]}
    return {
        "l1": dict(zip(ranking.model, ranking.l1_share.round(4), strict=True)),
        "spearman": dict(zip(ranking.model, ranking.spearman.round(4), strict=True)),
        "errors": errors,
        "auto": choice.label,
        "markov_order": int(ordered.attrs["info"]["order"]),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "conversions": paths.total_conversions,
        "distinct_paths": paths.n_paths,
    }


def summarise(by_seed: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, across seeds: L1 mean, sd, min, max; worst channel by mean |share error|;
    Spearman mean and min. Best mean L1 first."""
    seeds = list(by_seed)
    rows = []
    for model in next(iter(by_seed.values()))["l1"]:
        l1 = np.array([by_seed[s]["l1"][model] for s in seeds], float)
        rho = np.array([by_seed[s]["spearman"][model] for s in seeds], float)
        channels = sorted({c for s in seeds for c in by_seed[s]["errors"][model]})
        mean_abs = {c: float(np.mean([abs(by_seed[s]["errors"][model].get(c, 0.0))
                                      for s in seeds])) for c in channels}
        worst = max(channels, key=lambda c: (mean_abs[c], c)) if channels else ""
        finite = rho[np.isfinite(rho)]
        rows.append({
            "model": model, "l1": l1.tolist(), "l1_mean": float(l1.mean()),
            "l1_sd": float(l1.std(ddof=1)) if len(l1) > 1 else 0.0,
            "l1_min": float(l1.min()), "l1_max": float(l1.max()),
            "worst_channel": worst, "worst_error": mean_abs.get(worst, 0.0),
            "spearman_mean": float(finite.mean()) if len(finite) else float("nan"),
            "spearman_min": float(finite.min()) if len(finite) else float("nan"),
        })
    return sorted(rows, key=lambda r: (r["l1_mean"], r["model"]))


def _markdown(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    command = "python benchmarks/bench_accuracy.py " + shlex.join(args.argv) if args.argv else (
        "python benchmarks/run.py accuracy")
    data = []
    if args.gen_seeds:
        data.append(f"gen_paths: {args.journeys:,} journeys, seeds "
                    f"{', '.join(map(str, args.gen_seeds))}")
    if args.sim_seeds:
        data.append(
            f"simulator: B2C {args.b2c_people:,} people, B2B {args.b2b_people:,} people in "
            f"{args.b2b_accounts} accounts, seeds {', '.join(map(str, args.sim_seeds))}"
            f"{'; true paths and prepared journeys' if args.prepared else '; true paths'}")
    lines = [
        f"## Attribution accuracy against ground truth{args.title}",
        "",
        f"Command: `{command}` ({'; '.join(data)}). "
        "L1 share distance to the true incremental conversions (0 = perfect, 2 = disjoint), "
        "mean ± sd and min–max over seeds; worst channel: largest mean |credit share − truth "
        "share| over seeds; ρ: Spearman rank correlation of channel credits with the truth "
        "(mean, min). `auto` and `markov(order=auto)` choose by held-out likelihood on the "
        "journeys alone, never the truth.",
        "",
    ]
    for dataset, by_seed in results.items():
        seeds = list(by_seed)
        lines += [f"### {dataset}", "",
                  "| model | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | L1 mean ± sd | min–max | worst channel (mean error) | ρ mean (min) |",
                  "|---|" + "---:|" * (len(seeds) + 2) + "---|---:|"]
        for row in summarise(by_seed):
            lines.append(
                f"| {row['model']} | " + " | ".join(f"{v:.3f}" for v in row["l1"])
                + f" | {row['l1_mean']:.3f} ± {row['l1_sd']:.3f}"
                f" | {row['l1_min']:.3f}–{row['l1_max']:.3f}"
                f" | {row['worst_channel']} ({row['worst_error']:.3f})"
                f" | {row['spearman_mean']:.2f} ({row['spearman_min']:.2f}) |")
        beats = sum(by_seed[s]["l1"][AUTO] < by_seed[s]["l1"][BASELINE] for s in seeds)
        lines += ["", "auto picked: " + "; ".join(f"seed {s}: {by_seed[s]['auto']}"
                                                for s in seeds)
                  + f". auto beats {BASELINE} on {beats} of {len(seeds)} seeds. "
                  "markov order picked: " + ", ".join(f"seed {s}: {by_seed[s]['markov_order']}"
                                                      for s in seeds) + ".", ""]
    lines.append(f"Machine: {machine()}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journeys", type=int, default=GEN_JOURNEYS)
    parser.add_argument("--gen-seeds", type=int, nargs="*", default=list(GEN_SEEDS))
    parser.add_argument("--sim-seeds", type=int, nargs="*", default=list(SIM_SEEDS))
    parser.add_argument("--b2c-people", type=int, default=B2C_PEOPLE)
    parser.add_argument("--b2b-people", type=int, default=B2B_PEOPLE)
    parser.add_argument("--b2b-accounts", type=int, default=B2B_ACCOUNTS)
    parser.add_argument("--prepared", action=argparse.BooleanOptionalAction, default=True,
                        help="also score the journeys `touchline run` builds from the simulated "
                        "files (default; --no-prepared skips the ingest and run per data set)")
    parser.add_argument("--name", default="accuracy", help="result file name")
    parser.add_argument("--title", default=" (issue 18)", help="suffix of the section title")
    parser.add_argument("--scratch", action="store_true",
                        help="write <name>.md and .json to bench-data/ only, leaving "
                        "benchmarks/results (and so BENCHMARKS.md) as they are: for trial runs")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from touchline.attribution import read_path_file

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for seed in args.gen_seeds:
        print(f"gen_paths {args.journeys} seed {seed}", flush=True)
        paths_file, truth_file = _gen_paths(args.journeys, seed)
        results.setdefault(f"gen_paths {args.journeys:,}", {})[str(seed)] = score_dataset(
            read_path_file(paths_file), truth_file)
    sizes = {"b2c": (args.b2c_people, None), "b2b": (args.b2b_people, args.b2b_accounts)}
    for kind in ("b2c", "b2b"):
        for seed in args.sim_seeds:
            print(f"{kind} seed {seed}", flush=True)
            folder = _simulated(kind, seed, *sizes[kind])
            truth_file = folder / "truth.json"
            results.setdefault(f"simulator {kind.upper()}, true paths", {})[str(seed)] = (
                score_dataset(read_path_file(folder / "paths.csv"), truth_file))
            if args.prepared:
                print(f"{kind} seed {seed}: prepared journeys", flush=True)
                started = time.perf_counter()
                paths = _prepared_paths(kind, folder)
                prepared = score_dataset(paths, truth_file)
                prepared["seconds"]["prepare and journeys"] = round(
                    time.perf_counter() - started - sum(prepared["seconds"].values()), 2)
                results.setdefault(f"simulator {kind.upper()}, prepared journeys", {})[
                    str(seed)] = prepared
    markdown = _markdown(results, args)
    if args.scratch:
        DATA.mkdir(exist_ok=True)
        (DATA / f"{args.name}.md").write_text(markdown + "\n")
        (DATA / f"{args.name}.json").write_text(json.dumps(results, indent=2, default=str))
    else:
        write_result(args.name, markdown, results)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
