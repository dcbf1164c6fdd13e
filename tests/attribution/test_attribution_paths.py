"""Paths in: path files (CSV, Parquet) with precise errors, and touches aggregated in the engine."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from attribution_cases import touches_frame
from ibis.backends import BaseBackend

from touchline import engine
from touchline.attribution import PathSet, aggregate_paths, attribute, read_path_file
from touchline.errors import InputError, SchemaError


def _as_lists(paths: PathSet) -> list[tuple[tuple[str, ...], float, float, float]]:
    rows = []
    for i in range(paths.n_paths):
        codes = paths.codes[paths.offsets[i] : paths.offsets[i + 1]]
        rows.append(
            (tuple(paths.labels[codes]), paths.conversions[i], paths.value[i], paths.nulls[i])
        )
    return sorted(rows)


def test_csv_with_semicolons_and_channelattribution_names_is_read(tmp_path: Path) -> None:
    file = tmp_path / "paths.csv"
    file.write_text(
        "path;total_conversions;total_conversion_value;total_null\na > b;2;20.5;1\nb;0;0;3\n"
    )
    paths = read_path_file(file)
    assert _as_lists(paths) == [(("a", "b"), 2, 20.5, 1), (("b",), 0, 0, 3)]


def test_csv_with_commas_other_separator_and_no_optional_columns(tmp_path: Path) -> None:
    file = tmp_path / "paths.csv"
    file.write_text('path,conversions\n"a|b|a",4\n')
    paths = read_path_file(file, sep="|")
    assert _as_lists(paths) == [(("a", "b", "a"), 4, 0, 0)]


def test_parquet_path_file_is_read(tmp_path: Path) -> None:
    file = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"path": ["x > y", "y"], "conversions": [1, 2], "nulls": [0, 5]}), file)
    assert _as_lists(read_path_file(file)) == [(("x", "y"), 1, 0, 0), (("y",), 2, 0, 5)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("route,conversions\na,1\n", "missing column 'path'"),
        ("path,count\na,1\n", "missing column 'conversions' (or 'total_conversions')"),
        ("path,conversions\na,1\n,2\n", "line 3: column 'path': empty path"),
        ("path,conversions\na,1\na >  > b,2\n", "line 3: column 'path': empty touch in path"),
        ("path,conversions,nulls\na,1,0\nb,1,-4\n", "line 3: column 'nulls': negative count '-4'"),
        ("path;conversions\na;1\nb;two\n", "line 3: column 'conversions': 'two' is not a number"),
        ("", "empty file"),
    ],
    ids=[
        "no-path",
        "no-conversions",
        "empty-path",
        "empty-touch",
        "negative",
        "non-numeric",
        "empty-file",
    ],
)
def test_bad_path_file_error_names_file_line_and_column(
    tmp_path: Path, content: str, message: str
) -> None:
    file = tmp_path / "bad.csv"
    file.write_text(content)
    with pytest.raises(InputError) as caught:
        read_path_file(file)
    assert str(caught.value).startswith(str(file)) and message in str(caught.value)


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    file = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"path": ["a", "b"], "conversions": [1.0, float("nan")]}), file)
    with pytest.raises(InputError, match=r"bad.parquet: row 2: column 'conversions'"):
        read_path_file(file)


def test_path_list_with_a_null_touch_is_rejected() -> None:
    table = pa.table({"path": pa.array([["a", None]]), "conversions": [1]})
    with pytest.raises(InputError, match="row 1: a touch has no channel"):
        PathSet.from_arrow(table)
    with pytest.raises(SchemaError, match="column 'path' must be a list"):
        PathSet.from_arrow(pa.table({"path": ["a > b"], "conversions": [1]}))


# ---- engine aggregation: the same table on DuckDB and Spark ----------------------------------

JOURNEYS = {
    "j1": (["paid", "email", "paid"], True, 30.0),
    "j2": (["paid", "email", "paid"], True, 10.0),
    "j3": (["paid", "email", "paid"], False, 0.0),
    "j4": (["social"], False, 0.0),
    "j5": (["direct", "social"], True, 5.0),
}


def _sorted_rows(table: pd.DataFrame) -> list[tuple[object, ...]]:
    return sorted(
        (tuple(p), int(c), round(float(v), 9), int(n), int(lp), int(op))
        for p, c, v, n, lp, op in table[
            ["path", "conversions", "value", "nulls", "lead_position", "opportunity_position"]
        ].itertuples(index=False)
    )


def test_touches_aggregate_to_the_same_paths_on_every_engine(con: BaseBackend) -> None:
    frame = touches_frame(JOURNEYS).sample(frac=1.0, random_state=3)  # order must not matter
    frame["is_lead_touch"] = frame.journey_id.eq("j5") & frame.channel.eq("social")
    touches = engine.load_table(con, "touches", frame)
    got = _sorted_rows(aggregate_paths(touches).to_pandas())
    assert got == [
        (("direct", "social"), 1, 5.0, 0, 1, -1),
        (("paid", "email", "paid"), 2, 40.0, 1, -1, -1),
        (("social",), 0, 0.0, 1, -1, -1),
    ]
    by_campaign = aggregate_paths(touches, level="campaign", lookback=timedelta(hours=20))
    # touches 24 h apart, conversion 1 h after the last: a 20 h lookback keeps only the last
    # touch (an unconverted journey looks back from its last touch), and j5's lead touch
    # moves to position 0
    assert _sorted_rows(by_campaign.to_pandas()) == [
        (("paid-0",), 2, 40.0, 1, -1, -1),
        (("social-0",), 0, 0.0, 1, -1, -1),
        (("social-1",), 1, 5.0, 0, 0, -1),
    ]


def test_time_decay_runs_on_touches_with_ages_from_the_engine() -> None:
    con = engine.connect("duckdb://")
    touches = engine.load_table(
        con,
        "touches",
        touches_frame(
            {"j1": (["a", "b"], True, 8.0), "j2": (["b"], False, 0.0)}, hours_apart=24 * 7
        ),
    )
    credits = attribute(touches, "time_decay", half_life_days=7.0)
    # a: 7 days + 1 h before conversion, b: 1 h: weights 2^-(7d+1h)/7d and 2^-(1h/7d)
    hour = 1 / 24
    w_a, w_b = 2 ** (-(7 + hour) / 7), 2 ** (-hour / 7)
    expected_a = w_a / (w_a + w_b)
    assert credits.conversions.tolist() == pytest.approx([expected_a, 1 - expected_a])
    assert credits.value.tolist() == pytest.approx([8 * expected_a, 8 * (1 - expected_a)])
    con.disconnect()


def test_aggregate_paths_names_missing_columns() -> None:
    con = engine.connect("duckdb://")
    touches = engine.load_table(con, "t", pd.DataFrame({"journey_id": ["a"], "channel": ["x"]}))
    with pytest.raises(SchemaError, match=r"lacks column.*converted, touch_at"):
        aggregate_paths(touches)
    con.disconnect()


def test_pathset_counts_validation_rejects_negative() -> None:
    with pytest.raises(InputError, match=r"row 2: nulls is -1\.0"):
        PathSet.from_lists([["a"], ["b"]], conversions=[1, 1], nulls=[0, -1])
    assert np.array_equal(PathSet.from_lists([["b", "a"]], [1]).labels, ["a", "b"])
