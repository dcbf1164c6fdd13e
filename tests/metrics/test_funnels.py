"""Funnels by hand: cumulative, ordered, strict and any order; the window's edge; time
between steps; first-touch breakdowns. Both engines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pandas as pd
import pytest
from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store
from touchline.cli.metrics import parse_window
from touchline.errors import ConfigError
from touchline.metrics.funnels import funnel

T0 = datetime(2026, 3, 1)
STEPS = ["Viewed", "Form Submitted", "Order Completed"]
A, B, C, X = (*STEPS, "Other")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
TOUCHES = {  # person: [(event, time after T0)]
    "p1": [(A, 0 * HOUR), (B, 1 * HOUR), (C, 2 * HOUR)],
    "p2": [(A, 0 * HOUR), (X, HOUR / 2), (B, 1 * HOUR)],  # another touch between A and B
    "p3": [(B, 0 * HOUR), (A, 1 * HOUR), (C, 2 * HOUR)],  # B before A
    "p4": [(A, 0 * HOUR), (B, DAY)],  # exactly at the window's edge
    "p5": [(A, 0 * HOUR), (B, DAY + timedelta(seconds=1))],  # one second past it
}
CHANNELS = {"p1": "Email", "p2": "Email", "p3": "Direct", "p4": "Direct", "p5": "Direct"}


@pytest.fixture(scope="module")
def warehouse(module_con: BaseBackend) -> BaseBackend:
    """Loaded once per engine: every test here only reads it."""
    con = module_con
    rows = [{"touchpoint_id": f"{p}-{i}", "person_id": p, "event": event, "type": "track",
             "occurred_at": T0 + offset, "session_id": f"{p}#1"}
            for p, touches in TOUCHES.items() for i, (event, offset) in enumerate(touches)]
    engine.load_table(con, "touchpoints", arrow_table(store.TOUCHPOINTS, rows))
    sessions = [{"session_id": f"{p}#1", "person_id": p, "started_at": T0, "channel": c}
                for p, c in CHANNELS.items()]
    engine.load_table(con, "sessions", arrow_table(store.SESSIONS, sessions))
    return con


def _entered(frame: object) -> list[int]:
    return frame.entered.tolist()  # type: ignore[attr-defined]


def test_ordered_funnel_with_a_window_counts_the_edge_in(warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY).to_pandas()
    assert _entered(got) == [5, 3, 1]  # B: p1, p2, p4 (at the edge); not p3 (B first), p5
    assert got.converted.tolist()[:2] == [3, 1]
    assert got.dropped.tolist()[:2] == [2, 2]
    assert got.from_previous.tolist()[1:] == pytest.approx([3 / 5, 1 / 3])
    assert got.from_first.tolist() == pytest.approx([1, 3 / 5, 1 / 5])
    # A → B took 1 h, 1 h and 24 h
    assert got["median"][1] == pytest.approx(3600)
    assert got.p25[1] == pytest.approx(3600)
    assert got["median"][2] == pytest.approx(3600)  # p1's B → C
    assert _entered(funnel(warehouse, STEPS).to_pandas()) == [5, 4, 1]  # no window: p5 too


def test_strict_funnel_needs_the_very_next_touch(warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY, mode="strict").to_pandas()
    assert _entered(got) == [5, 2, 1]  # p2 had another touch between A and B


def test_any_order_funnel(warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY, mode="any").to_pandas()
    assert _entered(got) == [5, 4, 2]  # p3's B before A counts; p5 is one second too late
    two_hours = funnel(warehouse, STEPS, window=2 * HOUR, mode="any").to_pandas()
    assert _entered(two_hours) == [5, 3, 2]  # p1 and p3 span exactly 2 h: in


def test_breakdown_by_first_touch_channel_keeps_steps_nobody_reached(
        warehouse: BaseBackend) -> None:
    got = funnel(warehouse, STEPS, window=DAY, by="channel").to_pandas()
    by_group = {g: _entered(rows) for g, rows in got.groupby("group")}
    assert by_group == {"Direct": [3, 1, 0], "Email": [2, 2, 1]}


def test_bad_funnels_say_why(warehouse: BaseBackend) -> None:
    with pytest.raises(ConfigError, match="at least two steps"):
        funnel(warehouse, [A])
    with pytest.raises(ConfigError, match="mode 'loose'"):
        funnel(warehouse, STEPS, mode="loose")
    with pytest.raises(ConfigError, match="breakdown 'chanel'"):
        funnel(warehouse, STEPS, by="chanel")
    assert parse_window("30d") == timedelta(days=30)
    assert parse_window("90m") == timedelta(minutes=90)
    with pytest.raises(ConfigError, match=r"e\.g\. 30d"):
        parse_window("a month")


STAGE_ROWS = [  # person, stage, order, hours after T0: the lifecycle stages they entered
    ("p1", "awareness", 1, 0), ("p1", "consideration", 2, 5), ("p1", "decision", 3, 5),
    ("p2", "awareness", 1, 0), ("p2", "decision", 3, 30),  # skipped consideration
    ("p3", "consideration", 2, 0), ("p3", "awareness", 1, 2),  # considered before aware
    ("p3", "decision", 3, 3),
    ("p4", "awareness", 1, 0), ("p4", "consideration", 2, 24),  # at the window's edge
    ("p4", "decision", 3, 25),  # past it
    ("p5", "consideration", 2, 1),  # never aware: in no step
]
STAGE_STEPS = [f"stage:{s}" for s in ("awareness", "consideration", "decision")]


@pytest.fixture
def staged(warehouse: BaseBackend) -> Iterator[BaseBackend]:
    """The module's warehouse with stages, dropped again after the test."""
    engine.load_table(warehouse, "stages", arrow_table(store.STAGES, [
        {"unit": "person", "unit_id": p, "stage_model": "lifecycle", "stage": s,
         "stage_order": o, "entered_at": T0 + h * HOUR} for p, s, o, h in STAGE_ROWS]))
    yield warehouse
    warehouse.drop_table("stages", force=True)


def test_a_funnel_of_stages_in_one_pass_equals_the_general_one(
        staged: BaseBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct stage steps take the one-pass way (a small query); its figures are those
    of the step-by-step joins, by hand and side by side."""
    from touchline.metrics import funnels

    got = funnel(staged, STAGE_STEPS, window=DAY, mode="ordered").to_pandas()
    # aware: p1..p4; considered after: p1 (5 h), p4 (24 h: the edge is in); p3 considered
    # before; decided after considering within a day of awareness: p1 (0 h, at the same
    # moment: another stage counts as after); p4's decision is past the window
    assert _entered(got) == [4, 2, 1]
    assert got["median"].tolist()[1:] == pytest.approx([14.5 * 3600, 0.0])
    assert _entered(funnel(staged, STAGE_STEPS, mode="ordered").to_pandas()) == [4, 2, 2]
    by_channel = funnel(staged, STAGE_STEPS, by="channel", window=DAY,
                        mode="ordered").to_pandas()
    assert {g: _entered(r) for g, r in by_channel.groupby("group")} == {
        "Direct": [2, 1, 0], "Email": [2, 1, 1]}
    only = staged.table("stages").filter(lambda t: t.unit_id.isin(["p1", "p2"])).select(
        "unit_id").distinct()
    assert _entered(funnel(staged, STAGE_STEPS, units=only, mode="ordered").to_pandas()) == [
        2, 1, 1]
    cases = [{"window": DAY, "mode": "ordered"}, {"mode": "ordered"},
             {"by": "channel", "window": DAY, "mode": "ordered"}, {"mode": "strict"},
             {"units": only, "mode": "ordered"}]
    fast = [funnel(staged, STAGE_STEPS, **kw).to_pandas() for kw in cases]  # type: ignore[arg-type]
    monkeypatch.setattr(funnels, "_stage_of", lambda step, model: None)  # step by step
    for kw, one_pass in zip(cases, fast, strict=True):
        general = funnel(staged, STAGE_STEPS, **kw).to_pandas()  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(one_pass, general, obj=str(kw))


def test_a_cumulative_funnel_counts_a_unit_at_every_step_up_to_its_furthest(
        warehouse: BaseBackend) -> None:
    """Cumulative: the furthest step each reached counts for the steps before it too, so
    the counts never rise from one step to the next; times from the previous step reached."""
    got = funnel(warehouse, STEPS, mode="cumulative").to_pandas()
    # furthest: p1 C, p2 B, p3 C (B before A: order does not matter), p4 B, p5 B
    assert _entered(got) == [5, 5, 2]
    assert got.converted.tolist()[:2] == [5, 2]
    assert got.dropped.tolist()[:2] == [0, 3]
    assert got.from_previous.tolist()[1:] == pytest.approx([1.0, 2 / 5])
    # A → B: p1 1 h, p2 1 h, p4 24 h, p5 24 h 1 s (p3's B came before its A: left out)
    assert got["median"][1] == pytest.approx(12.5 * 3600)  # (1 h + 24 h) / 2
    assert got["median"][2] == pytest.approx(1.5 * 3600)  # B → C: p1 1 h, p3 2 h
    # a day from each one's earliest step: p5's B is a second too late (its furthest: A)
    windowed = funnel(warehouse, STEPS, mode="cumulative", window=DAY).to_pandas()
    assert _entered(windowed) == [5, 4, 2]
    by_channel = funnel(warehouse, STEPS, mode="cumulative", window=DAY,
                        by="channel").to_pandas()
    assert {g: _entered(r) for g, r in by_channel.groupby("group")} == {
        "Direct": [3, 2, 1], "Email": [2, 2, 1]}  # Direct: p3 C, p4 B, p5 A
    # events are no stages: their default stays ordered
    assert _entered(funnel(warehouse, STEPS, window=DAY).to_pandas()) == [5, 3, 1]


def test_a_funnel_of_stages_is_cumulative_by_default_and_skipped_stages_count(
        staged: BaseBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """p2 skipped consideration and p5 awareness: both count at the stages before their
    furthest, so no step shows more people than the one before it."""
    from touchline.metrics import funnels

    got = funnel(staged, STAGE_STEPS).to_pandas()
    assert _entered(got) == [5, 5, 4]  # furthest: p1..p4 decision, p5 consideration
    assert got.dropped.tolist()[:2] == [0, 1]
    # to consideration: p1 5 h, p4 24 h after awareness (p3 considered before: left out;
    # p5 has no earlier stage); to decision from the previous stage each reached: p1 0 h,
    # p2 30 h (from awareness: it skipped consideration), p3 3 h, p4 1 h → median 2 h
    assert got["median"].tolist()[1:] == pytest.approx([14.5 * 3600, 2 * 3600])
    # within a day of each one's first stage: p2's decision (30 h) and p4's (25 h) are out
    windowed = funnel(staged, STAGE_STEPS, window=DAY).to_pandas()
    assert _entered(windowed) == [5, 4, 2]
    assert windowed["median"].tolist()[1:] == pytest.approx([14.5 * 3600, 1.5 * 3600])
    assert _entered(funnel(staged, STAGE_STEPS, mode="ordered").to_pandas()) == [4, 2, 2]
    # the one pass over stages equals the step-by-step union of each step's first entry
    cases = [{}, {"window": DAY}, {"by": "channel", "window": DAY}]
    fast = [funnel(staged, STAGE_STEPS, mode="cumulative", **kw).to_pandas() for kw in cases]  # type: ignore[arg-type]
    monkeypatch.setattr(funnels, "_stage_of", lambda step, model: None)  # step by step
    for kw, one_pass in zip(cases, fast, strict=True):
        general = funnel(staged, STAGE_STEPS, mode="cumulative", **kw).to_pandas()  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(one_pass, general, obj=str(kw))
    assert funnels.mode_line("cumulative") == (
        "cumulative funnel: a person counts at every step up to the furthest one it reached, "
        "skipped steps included (`touchline funnel --mode ordered`: only the steps reached in "
        "order)")
