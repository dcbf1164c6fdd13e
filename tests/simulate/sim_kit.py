"""Helpers shared by the simulator tests: a simulation's output, parsed."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Output:
    """A simulation's folder, its truth and its parsed events."""

    path: Path
    truth: dict[str, Any]
    lines: list[bytes]
    events: list[dict[str, Any]]


def load(path: Path) -> Output:
    with gzip.open(path / "events.ndjson.gz", "rb") as handle:
        lines = handle.read().splitlines()
    return Output(path, json.loads((path / "truth.json").read_text()), lines,
                  [orjson.loads(line) for line in lines])
