"""Attribution benchmark: touchline against ChannelAttribution and marketing-attribution-models.

On 1M journeys from ``../shared/bench/gen_paths.py`` (223k distinct paths, with ground truth),
in one run:

* all touchline rule models together vs ChannelAttribution's ``heuristic_models`` (goal ≤ 0.25×);
* exact Markov order 1 and 3 vs ChannelAttribution's Monte Carlo ``markov_model`` (goal ≤ 1×);
* exact Shapley over all 10 channels vs MAM's polars Shapley (goal ≤ 0.25×);
* peak memory of each process (goal: below ChannelAttribution's);
* L1 share distance to the true incremental conversions for every model of every library.

Each measurement is its own process under ``../shared/bench/timed.py`` (wall time, peak RSS of
the process tree). Inside it the library call alone is timed (best of a few runs; reading the
file is not counted), so ratios compare the attribution maths, not CSV parsers.

The peers are GPL / third-party: they live in ``bench-data/peers-venv`` (created here), never in
touchline's dependencies; the worker code below that imports them runs only in that venv.

    python benchmarks/bench_attribution.py            # or: python benchmarks/run.py attribution
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

JOURNEYS = 1_000_000
SEED = 7
RULES = (
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "position_based",
    "j_shaped",
    "inverse_j",
    "w_shaped",
    "full_path",
    "custom",
)
PEERS = (
    "numpy",
    "pandas",
    "matplotlib",
    "channelattribution==2.2.5",
    "marketing-attribution-models==2.1.1",
)


def _best(call: Any, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return best, result


# ---- workers: one measurement per process ---------------------------------------------------


def _touchline_worker(task: str, paths_file: Path) -> dict[str, Any]:
    from touchline.attribution import MODELS, PathSet, read_path_file

    paths = read_path_file(paths_file)
    fields = (
        "labels",
        "offsets",
        "codes",
        "conversions",
        "value",
        "nulls",
        "lead_position",
        "opportunity_position",
    )

    def fresh() -> PathSet:  # no cached derived arrays: each timing starts from the table
        return PathSet(**{f: getattr(paths, f) for f in fields})

    def run(name: str, shared: PathSet | None = None, **params: Any) -> dict[str, float]:
        credits = MODELS[name].function(shared or fresh(), **params)
        return dict(zip(map(str, paths.labels), map(float, credits.conversions), strict=True))

    def rules() -> dict[str, dict[str, float]]:
        shared = fresh()  # one table, as attribute/compare do: derived arrays computed once
        return {m: run(m, shared) for m in RULES}

    if task == "rules":
        seconds, credits = _best(rules, 3)
        return {"call_s": seconds, "credits": credits}
    if task.startswith("markov"):
        order = int(task.removeprefix("markov"))
        seconds, credits = _best(lambda: run("markov", order=order), 3)
        return {"call_s": seconds, "credits": {f"markov_o{order}": credits}}
    if task == "shapley":
        seconds, credits = _best(lambda: run("shapley"), 3)
        rate_s, rate = _best(lambda: run("shapley", coalition="conversion_rate"), 3)
        return {
            "call_s": seconds,
            "conversion_rate_call_s": rate_s,
            "credits": {"shapley": credits, "shapley_rate": rate},
        }
    if task == "all":
        out: dict[str, Any] = {"credits": {}, "seconds": {}}
        variants = [(m, {}) for m in MODELS if m != "time_decay"]
        variants += [("markov", {"order": k}) for k in (2, 3, 4)]
        variants += [("shapley", {"coalition": "conversion_rate"}), ("linear", {"dedupe": True})]
        for name, params in variants:
            label = name + "".join(f"_{k}={v}" for k, v in params.items())
            seconds, credits = _best(lambda n=name, p=params: run(n, **p), 1)
            out["seconds"][label], out["credits"][label] = seconds, credits
        return out
    raise SystemExit(f"unknown touchline task {task}")


def _peer_worker(task: str, paths_file: Path) -> dict[str, Any]:
    import pandas as pd

    data = pd.read_csv(paths_file)
    if task.startswith("ca-"):
        import ChannelAttribution as ca  # GPL-3: only ever imported here, in the peers venv

        data["path"] = data["path"].str.replace(" > ", ">", regex=False)
        if task == "ca-heuristic":
            seconds, frame = _best(
                lambda: ca.heuristic_models(
                    data, "path", "conversions", var_value="value", sep=">", flg_pro=False
                ),
                3,
            )
            channels = frame.channel_name.astype(str)
            credits = {
                f"ca_{m}": dict(zip(channels, map(float, frame[f"{m}_conversions"]), strict=True))
                for m in ("first_touch", "last_touch", "linear_touch")
            }
            return {"call_s": seconds, "credits": credits}
        order = int(task.removeprefix("ca-markov"))
        seconds, result = _best(
            lambda: ca.markov_model(
                data,
                "path",
                "conversions",
                var_value="value",
                var_null="nulls",
                order=order,
                sep=">",
                verbose=False,
                flg_pro=False,
            ),
            3,
        )
        frame = result if isinstance(result, pd.DataFrame) else result["result"]
        credits = dict(
            zip(frame.channel_name.astype(str), map(float, frame.total_conversions), strict=True)
        )
        return {"call_s": seconds, "credits": {f"ca_markov_o{order}": credits}}
    from mam import MAM

    # grouped journeys: one row per (path, outcome); without a value column MAM credits
    # conversions, which is what the truth counts
    converting = pd.DataFrame(
        {"path": data.path, "occurrences": data.conversions, "has_conv": True}
    )
    failing = pd.DataFrame({"path": data.path, "occurrences": data.nulls, "has_conv": False})
    long = pd.concat([converting, failing])
    long = long[long.occurrences > 0].reset_index(drop=True)
    start = time.perf_counter()
    model = MAM(
        long,
        format_type="grouped_journey",
        channels_colname="path",
        journey_with_conv_colname="has_conv",
        occurrences_colname="occurrences",
        path_separator=" > ",
    )
    setup_s = time.perf_counter() - start

    def credits_of(result: Any) -> dict[str, float]:
        frame = result.to_pandas()
        return dict(zip(frame.iloc[:, 0].astype(str), map(float, frame.iloc[:, 1]), strict=True))

    if task == "mam-shapley":
        seconds, result = _best(lambda: model.run_shapley(max_size=10, value_column="conv_rate"), 2)
        return {
            "call_s": seconds,
            "setup_s": setup_s,
            "credits": {"mam_shapley": credits_of(result)},
        }
    if task == "mam-markov":
        seconds, result = _best(model.run_markov, 1)
        return {
            "call_s": seconds,
            "setup_s": setup_s,
            "credits": {"mam_markov": credits_of(result)},
        }
    if task == "mam-heuristics":
        credits = {}
        for name in ("first_click", "last_click", "linear", "position_based"):
            credits[f"mam_{name}"] = credits_of(getattr(model, f"run_{name}")())
        return {"setup_s": setup_s, "credits": credits}
    raise SystemExit(f"unknown peer task {task}")


# ---- driver ----------------------------------------------------------------------------------


def _inputs(data: Path, shared: Path, python: str) -> tuple[Path, Path]:
    tag = f"{JOURNEYS // 1_000_000}M"
    paths, truth = data / f"paths_{tag}.csv", data / f"truth_{tag}.json"
    if not (paths.exists() and truth.exists()):
        subprocess.run(
            [
                python,
                str(shared / "gen_paths.py"),
                "--journeys",
                str(JOURNEYS),
                "--seed",
                str(SEED),
                "--out",
                str(paths),
                "--truth",
                str(truth),
            ],
            check=True,
        )
    return paths, truth


def _peers_python(data: Path) -> str:
    venv = data / "peers-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
    return str(python)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import DATA, PYTHON, SHARED_BENCH, machine, timed, write_result

    from touchline.attribution.evaluate import load_truth, score

    paths, truth_file = _inputs(DATA, SHARED_BENCH, PYTHON)
    peers = _peers_python(DATA)
    me = str(Path(__file__).resolve())
    plan = [
        ("touchline", "rules", PYTHON),
        ("ca", "ca-heuristic", peers),
        ("touchline", "markov1", PYTHON),
        ("ca", "ca-markov1", peers),
        ("touchline", "markov3", PYTHON),
        ("ca", "ca-markov3", peers),
        ("touchline", "shapley", PYTHON),
        ("mam", "mam-shapley", peers),
        ("mam", "mam-markov", peers),
        ("mam", "mam-heuristics", peers),
        ("touchline", "all", PYTHON),
    ]
    runs: dict[str, dict[str, Any]] = {}
    for library, task, python in plan:
        out = DATA / f"attribution-{task}.json"
        out.unlink(missing_ok=True)
        record = timed(
            f"attribution/{task}",
            [python, me, "--worker", task, "--paths", str(paths), "--out", str(out)],
            timeout=3600,
        )
        runs[task] = {
            **json.loads(out.read_text()),
            "library": library,
            "wall_s": record["wall_s"],
            # time -v's exact peak of the process, or the sampled tree if larger
            "peak_rss_gib": max(record.get("time_v_maxrss_mib") or 0, record["tree_peak_rss_mib"])
            / 1024,
            "others_cpu_s": record.get("others_cpu_s"),
        }
        print(
            f"{task}: {runs[task].get('call_s', float('nan')):.3f} s, "
            f"{runs[task]['peak_rss_gib']:.2f} GiB",
            flush=True,
        )

    truth = load_truth(truth_file)
    distances = []
    for task, run in runs.items():
        if run["library"] == "touchline" and task != "all":
            continue  # task "all" has every touchline model
        for model, credits in run["credits"].items():
            distances.append(
                {"library": run["library"], "model": model, **score(credits, truth.conversions)}
            )
    distances.sort(key=lambda d: d["l1_share"])

    def ratio(ours: str, theirs: str) -> float:
        return runs[ours]["call_s"] / runs[theirs]["call_s"]

    comparisons = [
        ("all 10 rule models vs CA heuristic_models (3 models)", "rules", "ca-heuristic", 0.25),
        (
            "exact Markov order 1 vs CA markov_model order 1 (Monte Carlo)",
            "markov1",
            "ca-markov1",
            1.0,
        ),
        (
            "exact Markov order 3 vs CA markov_model order 3 (Monte Carlo)",
            "markov3",
            "ca-markov3",
            1.0,
        ),
        (
            "exact Shapley, 10 channels vs MAM polars Shapley (max_size 10)",
            "shapley",
            "mam-shapley",
            0.25,
        ),
    ]
    rows = []
    for what, ours, theirs, goal in comparisons:
        r = ratio(ours, theirs)
        rows.append(
            f"| {what} | {runs[ours]['call_s']:.3f} s | {runs[theirs]['call_s']:.3f} s | "
            f"**{r:.3f}×** | ≤ {goal}× {'✓' if r <= goal else '✗'} | "
            f"{runs[ours]['peak_rss_gib']:.2f} / {runs[theirs]['peak_rss_gib']:.2f} GiB |"
        )
    l1_rows = [
        f"| {d['library']} | {d['model']} | {d['l1_share']:.3f} | {d['worst_channel']} "
        f"({d['worst_error']:+.3f}) | {d['spearman']:.2f} |"
        for d in distances
    ]
    command = "python benchmarks/bench_attribution.py"
    peers_versions = subprocess.run(
        [peers, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=False
    ).stdout
    versions = ", ".join(
        line
        for line in peers_versions.splitlines()
        if line.lower().replace("_", "-").startswith(("channelattribution", "marketing-attr"))
    )
    md = "\n".join(
        [
            "## Attribution (issue 5)",
            "",
            f"`{command}` — {JOURNEYS:,} journeys from `gen_paths.py --seed {SEED}` "
            f"({sum(1 for _ in paths.open()) - 1:,} distinct paths). Machine: {machine()}. "
            f"Peers ({versions}) run in `bench-data/peers-venv`. Times are the library call alone, "
            "best of 3 (MAM Shapley best of 2), each library in its own process; peak RSS is that "
            "whole process (file reading included; `time -v` peak).",
            "",
            "| comparison | touchline | peer | ratio | goal | peak RSS touchline / peer |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"MAM Markov: {runs['mam-markov']['call_s']:.2f} s at "
            f"{runs['mam-markov']['peak_rss_gib']:.2f} GiB. touchline's rule models include "
            "W-shaped, full path and custom, which the peers lack.",
            "",
            "Distance to the ground truth (`expected_conversions_lost_without_channel`), as "
            "shares of conversions: L1 = Σ|credit share − truth share| (0 perfect, 2 disjoint), "
            "worst channel (signed share error), Spearman rank correlation. Best first.",
            "",
            "| library | model | L1 share | worst channel | Spearman |",
            "|---|---|---|---|---|",
            *l1_rows,
        ]
    )
    write_result(
        "attribution",
        md,
        {
            "machine": machine(),
            "command": command,
            "journeys": JOURNEYS,
            "runs": runs,
            "truth_distance": distances,
            "ratios": {c[1]: ratio(c[1], c[2]) for c in comparisons},
        },
    )
    print(md)


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--paths", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.worker.startswith(("ca-", "mam-")):
        result = _peer_worker(args.worker, args.paths)
    else:
        result = _touchline_worker(args.worker, args.paths)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _worker_main(sys.argv[1:])
    else:
        main()
