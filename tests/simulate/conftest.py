"""Small simulated data sets, made once per test session and read by many tests."""

from __future__ import annotations

import pytest
from sim_kit import Output, load

from touchline.simulate import simulate


@pytest.fixture(scope="session")
def b2c(tmp_path_factory: pytest.TempPathFactory) -> Output:
    """1,500 people in three chunks, both event formats."""
    out = tmp_path_factory.mktemp("b2c")
    simulate(1_500, 11, out, fmt="both", chunk_people=600)
    return load(out)


@pytest.fixture(scope="session")
def b2b(tmp_path_factory: pytest.TempPathFactory) -> Output:
    """2,500 stakeholders of 500 companies."""
    out = tmp_path_factory.mktemp("b2b")
    simulate(2_500, 5, out, b2b=True, accounts=500, fmt="both", chunk_people=1_000)
    return load(out)
