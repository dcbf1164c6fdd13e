"""Fixtures of the attribution tests (the cases themselves live in attribution_cases.py)."""

from __future__ import annotations

import pytest
from attribution_cases import hand_paths

from touchline.attribution import PathSet


@pytest.fixture
def hand_case() -> PathSet:
    """A>B x10 (all convert), B x95 (5 convert), A x10 (convert), A>C x4 (convert), C x20."""
    return hand_paths()
