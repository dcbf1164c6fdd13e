"""Parameters are checked with clear messages; the CLI writes the files."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from touchline.cli import app
from touchline.errors import SimulationError
from touchline.simulate import simulate, text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"people": 0}, "people=0 is out of range"),
        ({"seed": -1}, "seed=-1 must be a non-negative"),
        ({"fmt": "csv"}, "format='csv' is not known"),
        ({"accounts": 3}, "only meaningful in B2B mode"),
        ({"b2b": True, "accounts": 50}, "accounts=50 must be between 1 and people=10"),
        ({"chunk_people": 0}, "chunk_people=0 must be at least 1"),
    ],
)
def test_bad_parameters_raise_simulation_error(tmp_path: Path, kwargs: dict[str, object],
                                               message: str) -> None:
    args = {"people": 10, "seed": 1, **kwargs}
    with pytest.raises(SimulationError, match=message):
        simulate(args.pop("people"), args.pop("seed"), tmp_path, **args)  # type: ignore[arg-type]


def test_out_must_not_be_a_file(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(SimulationError, match="is not a directory"):
        simulate(10, 1, file)


def test_cli_simulates_and_summarises(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--people", "40", "--seed", "2", "--out",
                                      str(tmp_path), "--b2b", "--accounts", "8",
                                      "--format", "parquet"])
    assert result.exit_code == 0, result.output
    assert "40 people in 8 accounts" in result.output
    assert (tmp_path / "events.parquet").exists()
    assert not (tmp_path / "events.ndjson.gz").exists()


def test_cli_reports_bad_parameters_without_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--people", "5", "--out", str(tmp_path),
                                      "--accounts", "2"])
    assert result.exit_code == 2
    assert "only meaningful in B2B mode" in result.output


def test_iso_timestamps_match_numpy() -> None:
    import numpy as np

    ms = np.array([0, 1_735_689_600_123, 1_767_225_599_999, 951_782_400_000])
    expected = [f"{s}Z" for s in np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")]
    assert text.iso_ms(ms).to_pylist() == expected


def test_scrambled_ids_are_unique() -> None:
    import numpy as np

    ids = text.scrambled_hex(np.arange(100_000), 10, "acc_").to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 14 and i.startswith("acc_") for i in ids[:10])
