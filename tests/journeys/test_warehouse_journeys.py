"""The user's path on their own file: init → ingest → run → attribute at any level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import CLI_OWN_CONNECTION
from typer.testing import CliRunner

from touchline.cli import app

EVENTS = [
    # ann: organic search, then a Google Ads click with keyword, then she buys
    {"type": "page", "anonymousId": "a1", "timestamp": "2026-03-01T09:00:00Z",
     "context": {"page": {"url": "https://shop.example/", "referrer": "https://www.google.com/"}}},
    {"type": "page", "anonymousId": "a1", "timestamp": "2026-03-03T09:00:00Z",
     "context": {"page": {"url": "https://shop.example/?utm_source=google&utm_medium=cpc"
                          "&utm_campaign=spring&utm_term=emergency+plumber&gclid=abc"}}},
    {"type": "track", "event": "Order Completed", "anonymousId": "a1",
     "timestamp": "2026-03-03T09:05:00Z", "properties": {"revenue": 120, "currency": "USD"}},
    # bob: one newsletter visit, no purchase
    {"type": "page", "anonymousId": "b1", "timestamp": "2026-03-02T10:00:00Z",
     "context": {"page": {"url": "https://shop.example/?utm_source=newsletter&utm_medium=email"}}},
]


@pytest.mark.duckdb_only(
    reason=CLI_OWN_CONNECTION)
def test_cli_attributes_the_users_own_prepared_files(tmp_path: Path) -> None:
    """The user's path: ingest their file, run, then get credits from the warehouse."""
    file = tmp_path / "events.ndjson"
    file.write_text("".join(json.dumps({"messageId": f"m{i}", **e}) + "\n"
                            for i, e in enumerate(EVENTS)))
    db = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    runner = CliRunner()
    for args in (["init", "--database", db],
                 ["ingest", str(file), "--kind", "events", "--database", db],
                 ["run", "--database", db]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "purchase credited by channel (linear)" in result.output
    assert ("intervals for purchase: the credit of these channels reaches zero (no ground for "
            "budget; table credit_intervals): auto: Email, Organic Search, Paid Search; "
            "counterfactual:") in " ".join(result.output.split())
    result = runner.invoke(app, ["attribute", "--model", "linear", "--format", "json",
                                 "--database", db])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    credits = {c["channel"]: (c["conversions"], c["value"]) for c in got["channels"]}
    # one purchase over two touches: half each, revenue alike; bob's journey did not convert
    assert credits == {"Organic Search": (0.5, 60.0), "Paid Search": (0.5, 60.0), "Email": (0, 0)}
    # a data-driven model comes with its bootstrap interval, as `touchline run` stored it: of
    # two journeys, a resample holds ann's purchase twice (a quarter of resamples), once, or
    # never (a quarter): Markov's half per channel ranges from 0 to 1, so both are flagged
    result = runner.invoke(app, ["attribute", "--model", "markov", "--format", "json",
                                 "--database", db])
    assert result.exit_code == 0, result.output
    bounds = {c["channel"]: (c["conversions"], c["conversions_low"], c["conversions_high"],
                             c["flagged"]) for c in json.loads(result.output)["channels"]}
    assert bounds == {"Organic Search": (0.5, 0.0, 1.0, True),
                      "Paid Search": (0.5, 0.0, 1.0, True), "Email": (0.0, 0.0, 0.0, True)}
    # time-decay Markov reads the stored journeys with their touch ages (ann's organic visit
    # two days before her purchase weighs less, but hers is the only converting route: half
    # each); markov's order chosen by likelihood falls back to 1 on two journeys, saying so
    result = runner.invoke(app, ["attribute", "--model", "markov_time_decay", "--format",
                                 "json", "--replicates", "0", "--database", db])
    assert result.exit_code == 0, result.output
    decayed = {c["channel"]: c["conversions"] for c in json.loads(result.stdout)["channels"]}
    assert decayed == pytest.approx({"Organic Search": 0.5, "Paid Search": 0.5, "Email": 0.0})
    result = runner.invoke(app, ["attribute", "--model", "markov", "--order", "auto",
                                 "--format", "json", "--replicates", "0", "--database", db])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["markov_order"]["picked"] == 1
    assert "markov order auto: order 1 unscored" in result.stderr
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as stored:
        rows = stored.sql("select channel, conversions_low, conversions_high, flagged from "
                          "credit_intervals where model = 'markov' order by channel").fetchall()
    assert rows == [("Email", 0.0, 0.0, True), ("Organic Search", 0.0, 1.0, True),
                    ("Paid Search", 0.0, 1.0, True)]
    result = runner.invoke(app, ["attribute", "--model", "markov", "--database", db],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "reaches 0" in result.output
    assert ("90% bootstrap intervals from 40 resamples of the journeys; the interval of "
            "Email, Organic Search, Paid Search reaches zero credit") in " ".join(
                result.output.split())
    result = runner.invoke(app, ["attribute", "--model", "last_touch", "--by", "keyword",
                                 "--format", "csv", "--database", db])
    assert result.exit_code == 0, result.output
    assert '"emergency plumber",1.0,120.0' in result.output
    result = runner.invoke(app, ["attribute", "--by", "keywrd", "--database", db])
    assert result.exit_code == 2
    assert "did you mean 'keyword'" in result.output
    result = runner.invoke(app, ["attribute", "--since", "2027-01-01", "--database", db])
    assert result.exit_code == 2
    assert "no journeys of purchase" in result.output
    result = runner.invoke(app, ["attribute", "--conversion", "purchse", "--database", db])
    assert result.exit_code == 2
    assert "did you mean 'purchase'" in result.output
    # the same journeys by stored credits: linear halves the purchase, by campaign too
    result = runner.invoke(app, ["attribute", "--model", "linear", "--by", "campaign",
                                 "--format", "json", "--database", db])
    assert result.exit_code == 0, result.output
    campaigns = {c["channel"]: c["conversions"] for c in json.loads(result.output)["channels"]}
    assert campaigns["spring"] == 0.5
    # ann's timeline, found by her anonymous id: every touch with its credit
    result = runner.invoke(app, ["person", "a1", "--database", db], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for text in ("Organic Search", "Paid Search", "emergency plumber", "Order Completed",
                 "purchase #1 (120.00)", "0.50 = 60.00", "awareness"):
        assert text in result.output, text
    result = runner.invoke(app, ["account", "a1", "--database", db])
    assert result.exit_code == 2
    assert "names person" in result.output
    result = runner.invoke(app, ["person", "nobody@example.com", "--database", db])
    assert result.exit_code == 2
    assert "no person or account is named 'nobody@example.com'" in result.output
    # the same warehouse from Python: every method an Ibis table
    import touchline

    wh = touchline.open(db)
    by_keyword = wh.credits(model="linear", by="keyword").to_pandas().set_index("keyword")
    assert by_keyword.conversions.to_dict() == {"(not set)": 0.5, "emergency plumber": 0.5}
    assert by_keyword.value.sum() == 120.0
    paths = wh.paths(to="all").to_pandas().set_index("path").journeys.to_dict()
    assert paths == {"Organic Search > Paid Search": 1, "Email": 1}
    assert "Order Completed" in set(wh.timeline("a1").to_pandas().detail)
    steps = wh.funnel(["page:^/$", "Order Completed"]).to_pandas()
    assert steps.entered.tolist() == [2, 1]  # ann and bob landed on /, ann bought
    assert wh.journeys("purchase").count().execute() == 2
