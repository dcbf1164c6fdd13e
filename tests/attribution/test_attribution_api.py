"""The Python API (attribute, compare, bootstrap, evaluate) and the CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from attribution_cases import HAND_CASE, hand_paths
from typer.testing import CliRunner

import touchline.attribution as attribution
from touchline.attribution import (
    MODELS,
    PathSet,
    Truth,
    attribute,
    bootstrap,
    compare,
    evaluate,
    load_truth,
    read_path_file,
    transition_matrix,
)
from touchline.cli import app
from touchline.errors import ConfigError, InputError, UnknownModelError

runner = CliRunner()


def test_all_lists_every_public_name_sorted() -> None:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions
    names = [
        n
        for n, v in vars(attribution).items()
        if n[0] != "_" and not isinstance(v, ModuleType) and n != "annotations"
    ]
    assert attribution.__all__ == sorted(names, key=lambda n: (not n.isupper(), n.islower(), n))


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'markv'.*choose from .*markov"):
        attribute(hand_paths(), "markv")


def test_unknown_parameter_is_a_config_error_naming_the_model() -> None:
    with pytest.raises(ConfigError, match=r"model 'linear'.*half_life"):
        attribute(hand_paths(), "linear", half_life=3)
    with pytest.raises(ConfigError, match="order must be an integer from 1 to 4"):
        attribute(hand_paths(), "markov", order=5)


def test_time_decay_on_aggregated_paths_says_it_needs_touches() -> None:
    with pytest.raises(InputError, match="time_decay needs touch timings"):
        attribute(hand_paths(), "time_decay")


def test_attribute_accepts_a_pandas_frame_of_lists() -> None:
    frame = pd.DataFrame({"path": [["a", "b"], ["b"]], "conversions": [2, 1], "value": [20, 5]})
    credits = attribute(frame, "linear")
    assert credits[["channel", "conversions", "value"]].values.tolist() == [
        ["a", 1.0, 10.0],
        ["b", 2.0, 15.0],
    ]
    assert credits.attrs["total_conversions"] == 3 and credits.attrs["model"] == "linear"


def test_compare_has_one_column_per_model_and_skips_time_decay_on_paths() -> None:
    table = compare(hand_paths())
    assert list(table.columns) == ["channel", *[m for m in MODELS if not MODELS[m].needs_ages]]
    assert "time_decay" not in table and "markov_time_decay" not in table
    assert table.set_index("channel").loc["A", "first_touch"] == 24
    value = compare(hand_paths(), ["last_touch"], measure="value")
    assert value.last_touch.tolist() == [100, 150, 40]


def test_markov_transition_matrix_rows_sum_to_one() -> None:
    matrix = transition_matrix(hand_paths())
    sums = matrix.groupby("from_state").probability.sum()
    assert np.allclose(sums, 1.0)
    row = matrix[(matrix.from_state == "B") & (matrix.to_state == "(conversion)")]
    assert row.probability.item() == pytest.approx(1 / 7) and row["count"].item() == 15


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_data() -> None:
    small = attribute(hand_paths(), "linear", ci=0.9, replicates=300, seed=1)
    paths = hand_paths()
    big = paths.with_counts(paths.conversions * 100, paths.value * 100, paths.nulls * 100)
    large = attribute(big, "linear", ci=0.9, replicates=300, seed=1)
    assert (small.conversions_low <= small.conversions).all()
    assert (small.conversions <= small.conversions_high).all()
    width_small = (small.conversions_high - small.conversions_low) / small.conversions
    width_large = (large.conversions_high - large.conversions_low) / large.conversions
    # relative width shrinks like 1/sqrt(n): 100x the journeys, about a tenth
    assert (width_large < width_small / 5).all()


def test_bootstrap_of_a_linear_model_equals_rerunning_the_model() -> None:
    # the sparse shortcut and the generic path must draw the same replicates
    paths = hand_paths()
    fast, _ = bootstrap(paths, "first_touch", replicates=5, seed=4)
    credits = attribute(paths, "first_touch")
    rng = np.random.default_rng(4)
    cells = np.concatenate([paths.conversions, paths.nulls])
    draws = rng.multinomial(int(cells.sum()), cells / cells.sum(), size=5)[:, : paths.n_paths]
    slow = [
        attribute(
            paths.with_counts(d.astype(float), d * 10.0, paths.nulls), "first_touch"
        ).conversions.to_numpy()
        for d in draws
    ]
    assert np.allclose(fast, slow)
    assert credits.conversions.sum() == 29


def test_bootstrap_reruns_markov_per_replicate() -> None:
    credits = attribute(hand_paths(), "markov", ci=0.8, replicates=20, seed=0)
    assert (credits.conversions_low < credits.conversions_high).all()


# ---- evaluate ----------------------------------------------------------------------------------


def test_evaluate_scores_l1_worst_channel_and_rank_correlation() -> None:
    credits = {
        "perfect": pd.DataFrame({"channel": ["a", "b"], "conversions": [3.0, 1.0]}),
        "swapped": pd.DataFrame({"channel": ["a", "b"], "conversions": [1.0, 3.0]}),
    }
    table = evaluate(credits, {"a": 30.0, "b": 10.0})
    assert table.model.tolist() == ["perfect", "swapped"]
    assert table.l1_share.tolist() == pytest.approx([0.0, 1.0])
    assert table.spearman.tolist() == pytest.approx([1.0, -1.0])
    assert table.worst_error.iloc[1] == pytest.approx(-0.5)


def test_evaluate_takes_a_compare_table_and_counts_missing_channels_as_zero() -> None:
    table = compare(hand_paths(), ["first_touch", "last_touch"])
    scored = evaluate(table, Truth({"A": 24.0, "B": 5.0, "D": 0.0}))
    assert scored.set_index("model").l1_share["first_touch"] == pytest.approx(0.0)


def test_both_truth_formats_are_read(tmp_path: Path) -> None:
    simulator = tmp_path / "truth.json"
    simulator.write_text(
        json.dumps(
            {
                "channels": {"a": {"incremental_conversions": 3, "incremental_revenue": 30.5}},
                "persons": 9,
            }
        )
    )
    generator = tmp_path / "truth_1M.json"
    generator.write_text(
        json.dumps({"journeys": 5, "expected_conversions_lost_without_channel": {"a": 1.5}})
    )
    assert load_truth(simulator) == Truth({"a": 3.0}, {"a": 30.5}, str(simulator))
    assert load_truth(generator) == Truth({"a": 1.5}, None, str(generator))
    generator.write_text("{}")
    with pytest.raises(InputError, match="no ground truth found"):
        load_truth(generator)


# ---- CLI -----------------------------------------------------------------------------------


def _hand_file(tmp_path: Path) -> Path:
    file = tmp_path / "paths.csv"
    lines = ["path;total_conversions;total_conversion_value;total_null"]
    lines += [f"{' > '.join(p)};{c};{10 * c};{n - c}" for p, n, c in HAND_CASE]
    file.write_text("\n".join(lines) + "\n")
    return file


def test_cli_json_follows_the_contract(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "attribute",
            "--paths",
            str(_hand_file(tmp_path)),
            "--model",
            "markov",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "markov" and data["params"] == {}
    assert data["total_conversions"] == 29 and data["total_value"] == 290
    channels = {c["channel"]: c for c in data["channels"]}
    assert channels["A"]["conversions"] == pytest.approx(7366 / 653)
    assert channels["C"]["removal_effect"] == pytest.approx(84 / 609)


def test_cli_order_and_params_reach_the_model(tmp_path: Path) -> None:
    file = _hand_file(tmp_path)
    result = runner.invoke(
        app,
        [
            "attribute",
            "--paths",
            str(file),
            "--model",
            "markov",
            "--order",
            "2",
            "--format",
            "json",
        ],
    )
    assert json.loads(result.stdout)["params"] == {"order": 2}
    result = runner.invoke(
        app,
        [
            "attribute",
            "--paths",
            str(file),
            "--model",
            "position_based",
            "--param",
            "first=0.7",
            "--param",
            "last=0.3",
            "--format",
            "csv",
            "--out",
            str(tmp_path / "out.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv")
    # A > B: 0.7/0.3, A > C likewise: A 7 + 10 + 2.8, B 3 + 5, C 1.2
    assert out.conversions.tolist() == pytest.approx([19.8, 8.0, 1.2])


def test_cli_model_all_prints_every_model_side_by_side(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["attribute", "--paths", str(_hand_file(tmp_path)), "--model", "all", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["models"]) == set(MODELS) - {"time_decay", "markov_time_decay"}
    a = next(c for c in data["channels"] if c["channel"] == "A")
    assert a["conversions"]["first_touch"] == 24 and a["value"]["last_touch"] == 100
    table = runner.invoke(
        app,
        [
            "attribute",
            "--paths",
            str(_hand_file(tmp_path)),
            "--model",
            "all",
            "--out",
            str(tmp_path / "all.txt"),
        ],
    )
    assert table.exit_code == 0 and "first_touch" in (tmp_path / "all.txt").read_text()


#: channel names as long as GA4's, and counts in the hundred thousands: the widest cells
WIDE_PATHS = """path;total_conversions;total_conversion_value;total_null
Organic Search > Paid Search;123456;12000;300
Mobile Push Notifications > Email;80;9000;200
Organic Social > Referral > Paid Search;40;5000;150
Direct;60000;4000;500
Cross-network > Organic Search > Direct;30;3500;120
"""


def _rendered_tables(text: str) -> dict[str, dict[str, str]]:
    """``{model: {channel: cell}}`` from rich tables as printed (a channel name wrapped onto a
    second line is joined back)."""
    cells: dict[str, dict[str, str]] = {}
    header: list[str] = []
    last = ""
    for line in text.splitlines():
        if line.startswith("┃"):
            header = [c.strip() for c in line.strip("┃").split("┃")]
        elif line.startswith("│"):
            row = [c.strip() for c in line.strip("│").split("│")]
            if all(v == "" for v in row[1:]):  # the wrapped rest of the label above
                for model in header[1:]:
                    cells[model][f"{last} {row[0]}"] = cells[model].pop(last)
                last = f"{last} {row[0]}"
                continue
            last = row[0]
            for model, value in zip(header[1:], row[1:], strict=True):
                cells.setdefault(model, {})[last] = value
    return cells


def test_cli_model_all_fits_an_80_column_terminal(tmp_path: Path) -> None:
    """Every model's credit of every channel is in the output, whole, and no line passes 80
    columns. Before, rich squeezed 14 model columns into 80 and cut every cell to ``1…``."""
    paths = tmp_path / "paths.csv"
    paths.write_text(WIDE_PATHS)
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", "from touchline.cli import app; app()", "attribute", "--paths",
         str(paths), "--model", "all"],
        capture_output=True, text=True, env=env, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in done.stdout
    expected = compare(read_path_file(paths))
    got = _rendered_tables(done.stdout)
    assert sorted(got) == sorted(expected.columns[1:])  # every model once
    for model in expected.columns[1:]:
        assert got[model] == {channel: f"{value:,.1f}" for channel, value
                              in zip(expected.channel, expected[model], strict=True)}
    assert got["first_touch"]["Organic Search"] == "123,456.0"
    assert "Mobile Push Notifications" in got["markov"]


def test_cli_table_shows_channels_by_credit(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["attribute", "--paths", str(_hand_file(tmp_path)), "--model", "first_touch"]
    )
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["A", "B", "C"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,conv\na,1\n", "missing column 'conversions'"),
        ("path,conversions\na,1\n ,2\n", "line 3: column 'path': empty path"),
        ("path,conversions\na,-1\n", "line 2: column 'conversions': negative count"),
        ("path,conversions\na,1\nb,1e\n", "line 3: column 'conversions': '1e' is not a number"),
    ],
)
def test_cli_bad_file_exits_2_naming_file_and_line(
    tmp_path: Path, content: str, message: str
) -> None:
    file = tmp_path / "bad.csv"
    file.write_text(content)
    result = runner.invoke(app, ["attribute", "--paths", str(file), "--model", "linear"])
    assert result.exit_code == 2
    assert "bad.csv" in result.stderr and message in result.stderr


def test_cli_evaluate_ranks_models_against_truth(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps(
            {
                "channels": {
                    "A": {"incremental_conversions": 24, "incremental_revenue": 240},
                    "B": {"incremental_conversions": 5, "incremental_revenue": 50},
                    "C": {"incremental_conversions": 0, "incremental_revenue": 0},
                }
            }
        )
    )
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--truth",
            str(truth),
            "--paths",
            str(_hand_file(tmp_path)),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    ranking = json.loads(result.stdout)["ranking"]
    assert ranking[0]["model"] == "first_touch" and ranking[0]["l1_share"] == pytest.approx(0)
    assert [r["l1_share"] for r in ranking] == sorted(r["l1_share"] for r in ranking)


def test_pathset_from_lists_doctest_example() -> None:
    paths = PathSet.from_lists([["a", "b"], ["b"]], conversions=[1, 2], nulls=[0, 5])
    assert (paths.n_paths, list(paths.labels), paths.total_conversions) == (2, ["a", "b"], 3.0)


def test_python_examples_in_the_docs_run() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "attribution.md").read_text()
    blocks = [part.split("```", 1)[0] for part in doc.split("```python\n")[1:]]
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, "docs/attribution.md", "exec"), {})  # its asserts state the output


def test_demo_summary_prints_comparison_and_ranking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from touchline.cli.attribution import print_demo_summary

    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps({"expected_conversions_lost_without_channel": {"A": 24.0, "B": 5.0, "C": 0.0}})
    )
    print_demo_summary(_hand_file(tmp_path), truth)
    out = capsys.readouterr().out
    assert "conversions credited by each model (total 29)" in out
    ranking = out.split("models ranked", 1)[1]
    assert ranking.index("first_touch") < ranking.index("last_touch")
