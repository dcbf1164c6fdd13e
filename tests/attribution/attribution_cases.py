"""Shared cases of the attribution tests: the hand-checkable case, touch tables, strategies."""

from __future__ import annotations

import pandas as pd
from hypothesis import strategies as st

from touchline.attribution import PathSet

#: The issue's hand-checkable case: (path, journeys, of which converted), revenue 10 each.
HAND_CASE = [
    (["A", "B"], 10, 10),
    (["B"], 95, 5),
    (["A"], 10, 10),
    (["A", "C"], 4, 4),
    (["C"], 20, 0),
]


def hand_paths() -> PathSet:
    return PathSet.from_lists(
        [p for p, _, _ in HAND_CASE],
        conversions=[c for _, _, c in HAND_CASE],
        value=[10.0 * c for _, _, c in HAND_CASE],
        nulls=[n - c for _, n, c in HAND_CASE],
    )


def touches_frame(
    journeys: dict[str, tuple[list[str], bool, float]], *, hours_apart: float = 24.0
) -> pd.DataFrame:
    """Touch rows: each journey's channels ``hours_apart`` apart, converting an hour after the
    last touch when ``converted``. Timestamps are microsecond UTC (Spark reads no nanoseconds).
    """
    rows = []
    start = pd.Timestamp("2025-03-01", tz="UTC")
    for journey_id, (channels, converted, value) in journeys.items():
        last = start + pd.Timedelta(hours=hours_apart * (len(channels) - 1))
        for i, channel in enumerate(channels):
            rows.append(
                {
                    "journey_id": journey_id,
                    "touch_at": start + pd.Timedelta(hours=hours_apart * i),
                    "channel": channel,
                    "campaign": f"{channel}-{i % 2}",
                    "converted": converted,
                    "value": value if converted else 0.0,
                    "converted_at": last + pd.Timedelta(hours=1) if converted else pd.NaT,
                }
            )
    frame = pd.DataFrame(rows)
    for column in ("touch_at", "converted_at"):
        frame[column] = frame[column].astype("datetime64[us, UTC]")
    return frame


# ---- hypothesis strategies over aggregated paths (numpy layer only) ---------------------------

LABELS = ("a", "b", "c", "ab", "direct")


@st.composite
def path_sets(
    draw: st.DrawFn,
    *,
    min_rows: int = 1,
    max_rows: int = 7,
    with_ages: bool = True,
    labels: tuple[str, ...] = LABELS,
) -> PathSet:
    """Small random path sets: 1-5 touches per path, integer counts, revenue, touch ages."""
    rows = draw(st.integers(min_rows, max_rows))
    paths = [draw(st.lists(st.sampled_from(labels), min_size=1, max_size=5)) for _ in range(rows)]
    conversions = draw(st.lists(st.integers(0, 6), min_size=rows, max_size=rows))
    nulls = draw(st.lists(st.integers(0, 6), min_size=rows, max_size=rows))
    value = [c * draw(st.floats(1.0, 100.0)) for c in conversions]
    extra = {
        # stage touches for W-shaped / full path: -1 (none) or a position on the path
        "lead_position": [draw(st.integers(-1, len(p) - 1)) for p in paths],
        "opportunity_position": [draw(st.integers(-1, len(p) - 1)) for p in paths],
    }
    if with_ages:
        extra["ages"] = [
            sorted((draw(st.floats(0.0, 60.0)) for _ in p), reverse=True) for p in paths
        ]
    return PathSet.from_lists(paths, conversions, value, nulls, **extra)
