"""The data-quality charts' data on a hand-made warehouse (tests/serve/serve_kit.py,
``build_quality_warehouse``): bot share, duplicates merged, unmatched calls, identity links
cut and when data was last loaded; every figure worked out by hand below."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from ibis.backends import BaseBackend
from serve_kit import build_quality_warehouse

from touchline import engine
from touchline.config import Settings
from touchline.errors import MissingInputError
from touchline.serve.figures import (
    CHARTS,
    Filters,
    bot_share_data,
    call_matches_data,
    chart_data,
    duplicates_data,
    freshness,
    freshness_data,
    identity_cuts_data,
    last_loaded_text,
)


@pytest.fixture(scope="module")
def wh(module_con: BaseBackend) -> BaseBackend:
    return build_quality_warehouse(module_con)


def _rows(frame: pd.DataFrame) -> list[tuple[object, ...]]:
    return [tuple(r) for r in frame.to_numpy().tolist()]


def test_bot_share_is_of_the_rows_the_last_prepare_read(wh: BaseBackend) -> None:
    # the last prepare read 6 touches + 6 rows it dropped or merged = 12; bots: 2 by user
    # agent, 1 by bursts → 3 / 12 = 25 %
    bots = bot_share_data(wh)
    assert _rows(bots) == [("prepare:drop_bot_user_agents", 2, 2 / 12),
                           ("prepare:drop_bot_bursts", 1, 1 / 12)]
    assert (bots.attrs["read"], bots.attrs["bots"], bots.attrs["share"]) == (12, 3, 0.25)
    assert bots.attrs["note"] is None
    # the window is when prepare ran (2025-05-01 12:00): inside it, the same figures
    may = bot_share_data(wh, since=datetime(2025, 5, 1), until=datetime(2025, 5, 2))
    assert (may.attrs["read"], may.attrs["bots"]) == (12, 3)
    assert may.attrs["note"].startswith("rows rejected from 2025-05-01 and before 2025-05-02")
    june = bot_share_data(wh, since=datetime(2025, 6, 1))
    assert (june.attrs["read"], june.attrs["bots"], june.rows.tolist()) == (0, 0, [0, 0])
    assert june.attrs["note"].endswith(
        "the last prepare ran at 2025-05-01 12:00 UTC, outside it: remove the date range to "
        "see its bots")


def test_duplicates_merged_by_kind_step_and_reason(wh: BaseBackend) -> None:
    # exact: prepare's 2 repeated message ids; the file load i1's 3 duplicates, 1 of them a
    # copy inside the file (a reject) and 2 already stored; the collector's 1 repeated
    # messageId. Cross-source: 1. Orders: none, still a row
    dup = duplicates_data(wh)
    assert _rows(dup) == [
        ("exact", "ingest:events", "already_loaded", 2),
        ("exact", "prepare:dedupe_exact", "duplicate_message_id", 2),
        ("exact", "collect:spool", "duplicate", 1),
        ("exact", "ingest:events", "duplicate_in_file", 1),
        ("cross-source", "prepare:dedupe_cross_source", "cross_source_duplicate", 1),
        ("order", "", "", 0)]
    assert dup.attrs["totals"] == {"exact": 6, "cross-source": 1, "order": 0}
    # from 2025-04-15: the file loads (1 and 10 April) are out, the collector's and
    # prepare's merges in
    later = duplicates_data(wh, since=datetime(2025, 4, 15))
    assert later.attrs["totals"] == {"exact": 3, "cross-source": 1, "order": 0}
    assert later.attrs["note"].startswith("duplicates merged from 2025-04-15")


def test_calls_by_match_status_count_the_unmatched(wh: BaseBackend) -> None:
    # c1 matched, c2 and c3 unmatched, c5 expired; c4 not in events yet; c6 the telephony
    # tool's own event (found by its call_id property)
    calls = call_matches_data(wh)
    assert _rows(calls) == [("matched", 1), ("ambiguous", 0), ("expired", 1),
                            ("unmatched", 2), ("not matched yet", 1), ("sent as an event", 1)]
    assert (calls.attrs["unmatched"], calls.attrs["calls"]) == (2, 6)
    # calls that started from 20 April: c4, c5, c6
    late = call_matches_data(wh, since=datetime(2025, 4, 20))
    assert _rows(late) == [("matched", 0), ("ambiguous", 0), ("expired", 1),
                           ("unmatched", 0), ("not matched yet", 1), ("sent as an event", 1)]
    assert late.attrs["note"] == "calls that started from 2025-04-20"


def test_identity_links_cut_by_reason(wh: BaseBackend) -> None:
    cuts = identity_cuts_data(wh)
    assert _rows(cuts) == [("max_degree", 2), ("max_component", 0), ("unlinked", 1)]
    assert (cuts.attrs["linked"], cuts.attrs["cut"]) == (4, 3)


def test_last_loaded_is_the_latest_of_files_and_collector(wh: BaseBackend) -> None:
    fresh = freshness(wh)
    # files: i2 ended 10 April 09:00; the collector's last load 20 April 10:00 (@loaded)
    assert fresh["files"] == datetime(2025, 4, 10, 9, 0)
    assert fresh["collector"] == datetime(2025, 4, 20, 10, 0)
    assert (fresh["loaded"], fresh["loaded_by"]) == (datetime(2025, 4, 20, 10, 0), "collector")
    assert fresh["prepared"] == datetime(2025, 5, 1, 12, 0)
    assert last_loaded_text(fresh) == ("2025-04-20 10:00 UTC by the collector (touchline "
                                       "serve); files 2025-04-10 09:00 UTC")
    table = freshness_data(wh).set_index("what")
    assert table.loc["data last loaded", "at"] == "2025-04-20 10:00 UTC"
    assert table.loc["files last loaded", "detail"] == "2 file loads, 15 rows loaded in all"
    assert table.loc["last run (prepare)", "at"] == "2025-05-01 12:00 UTC"
    assert table.loc["last run left", "detail"] == (
        "6 touches in 2 sessions of 1 persons; 3 journeys (2 converted); credits under "
        "last_touch, linear")


def test_never_loaded_says_what_loads() -> None:
    fresh = {"files": None, "collector": None, "prepared": None, "loaded": None,
             "loaded_by": None}
    assert last_loaded_text(fresh) == ("never (touchline ingest, or the collector: touchline "
                                       "serve)")


def test_each_quality_chart_draws_its_numbers(wh: BaseBackend) -> None:
    filters = Filters()
    drawn = {name: CHARTS[name].figure(chart_data(wh, CHARTS[name], filters))
             for name in ("bot_share", "duplicates", "calls", "identity_cuts", "freshness")}
    assert drawn["bot_share"].layout.title.text == (
        "bot share: 25.0% of 12 rows read by prepare")
    assert list(drawn["bot_share"].data[0].y) == [2, 1]
    assert drawn["duplicates"].layout.title.text == (
        "duplicates merged: 6 exact, 1 cross-source, 0 order")
    assert [sum(t.y) for t in drawn["duplicates"].data] == [6, 1, 0]
    assert drawn["calls"].layout.title.text == (
        "unmatched calls: 2 of 6 (no number lease explains them)")
    assert list(drawn["identity_cuts"].data[0].y) == [2, 0, 1]
    assert drawn["freshness"].data[0].cells.values[1][0] == "2025-04-20 10:00 UTC"


def test_a_missing_input_says_why_in_one_line(tmp_path: Path) -> None:
    # a warehouse of its own (the module's engines hold the quality tables): no table at all
    con = engine.connect(settings=Settings(database_url=f"duckdb:///{tmp_path / 'new.db'}"))
    for fn, words in ((bot_share_data, "run `touchline run` first"),
                      (call_matches_data, "--kind calls"),
                      (identity_cuts_data, "run `touchline run` first")):
        with pytest.raises(MissingInputError, match=words):
            fn(con)
    assert freshness(con)["loaded_by"] is None
    assert freshness_data(con).set_index("what").loc["last run (prepare)", "detail"] == (
        "never: run `touchline run`")
