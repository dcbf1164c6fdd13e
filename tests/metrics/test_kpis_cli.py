"""``touchline kpis`` on a warehouse made by ``touchline run`` from simulated files: figures
checked against the files themselves (pandas) and the social, review, NPS and retention KPIs
against the simulator's truth (``truth.json``'s ``kpis``), CSV safe to open, errors with the
nearest name."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from factories import CLI_OWN_CONNECTION
from typer.testing import CliRunner

from touchline.cli import app
from touchline.metrics.kpis import KPIS
from touchline.simulate import simulate

pytestmark = pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
runner = CliRunner()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """600 simulated people, every file ingested (as a user would: `touchline ingest`) and
    run; one extra spend row whose campaign starts like a spreadsheet formula."""
    folder = tmp_path_factory.mktemp("kpis")
    data = folder / "data"
    simulate(600, 23, data)
    (folder / "evil.csv").write_text(
        "date,channel,utm_source,utm_medium,utm_campaign,cost,impressions,clicks\n"
        "2025-02-01,paid_social,meta,paid_social,=HYPERLINK(1),5.5,100,1\n")
    db = f"duckdb:///{folder / 'wh.duckdb'}"
    steps = [["init"], *(["ingest", str(data / f"{kind}.csv"), "--kind", kind]
                         for kind in ("spend", "surveys", "search_console", "deals",
                                      "reviews", "social")),
             ["ingest", str(data / "events.ndjson.gz"), "--kind", "events"],
             ["ingest", str(folder / "evil.csv"), "--kind", "spend"], ["run"]]
    for args in steps:
        result = runner.invoke(app, [*args, "--database", db])
        assert result.exit_code == 0, (args, result.output)
    return data, db


def _json(args: Sequence[str], db: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["kpis", *args, "--format", "json", "--database", db])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_kpis_on_a_run_warehouse_match_the_imported_files(simulated: tuple[Path, str]) -> None:
    data, db = simulated
    listed = _json(["--list"], db)
    assert [k["kpi"] for k in listed["kpis"]] == list(KPIS)
    assert all(k["formula"] and k["unit"] for k in listed["kpis"])
    # spend by channel: the export's own sums (plus the extra row), each under the name the
    # sessions give that channel (`touchline run` prepared the spend: channel_aliases.csv)
    spend = pd.read_csv(data / "spend.csv")
    named = {"affiliate": "Affiliates", "display": "Display", "email": "Email",
             "paid_search": "Paid Search", "paid_social": "Paid Social", "sms": "SMS",
             "video": "Paid Video"}
    want = spend.groupby(spend.channel.map(named)).cost.sum().to_dict()
    want["Paid Social"] += 5.5
    rows = _json(["--kpi", "paid_cost", "--by", "channel"], db)["kpis"][0]["rows"]
    assert {r["channel"]: r["paid_cost"] for r in rows} == pytest.approx(want)
    # Search Console: clicks and the impression-weighted position of the whole file
    sc = pd.read_csv(data / "search_console.csv")
    got = _json(["--kpi", "search_clicks", "--kpi", "search_position"], db)["kpis"]
    assert got[0]["rows"] == [{"search_clicks": int(sc.clicks.sum())}]
    assert got[1]["rows"][0]["search_position"] == pytest.approx(
        (sc.position * sc.impressions).sum() / sc.impressions.sum())
    # NPS of the survey file's answers
    scores = pd.read_csv(data / "surveys.csv").nps_score.dropna()
    promoters, detractors = (scores >= 9).sum(), (scores <= 6).sum()
    nps = _json(["--kpi", "nps"], db)["kpis"][0]["rows"][0]
    assert (nps["answers"], nps["promoters"], nps["detractors"]) == (
        len(scores), promoters, detractors)
    assert nps["nps"] == pytest.approx(100 * (promoters - detractors) / len(scores))
    # by the answerers' segment (plan), as the file gives it
    answers = pd.read_csv(data / "surveys.csv").dropna(subset=["nps_score"])
    want = answers.groupby("segment").nps_score.apply(
        lambda s: 100 * ((s >= 9).sum() - (s <= 6).sum()) / len(s)).to_dict()
    rows = _json(["--kpi", "nps", "--by", "segment"], db)["kpis"][0]["rows"]
    assert {r["segment"]: r["nps"] for r in rows} == pytest.approx(want)
    # a whole stage by channel: every KPI that holds a channel, the others said and skipped
    decision = _json(["--stage", "decision", "--by", "channel", "--period", "month"], db)
    shown = {k["kpi"] for k in decision["kpis"]}
    assert {"conversions", "revenue", "conversion_rate", "cpa", "roas"} <= shown
    conversions = sum(r["conversions"] for r in next(
        k for k in decision["kpis"] if k["kpi"] == "conversions")["rows"])
    sessions = _json(["--kpi", "sessions", "--since", "2000-01-01"], db)
    assert sessions["kpis"][0]["rows"][0]["sessions"] > conversions > 0
    awareness = runner.invoke(app, ["kpis", "--stage", "awareness", "--by", "query",
                                    "--database", db])
    assert awareness.exit_code == 0, awareness.output
    assert "skipped paid_cost: KPI 'paid_cost' cannot be broken down by 'query'" in (
        awareness.output)
    assert "search_ctr (awareness; ratio)" in awareness.output


def test_plain_kpis_print_one_summary_table_and_a_table_per_kpi_with_rows(
        simulated: tuple[Path, str]) -> None:
    """``touchline kpis``: the KPIs of one value each are the rows of one summary table (KPI,
    value, unit, stage; the values behind a ratio indented under it), and only the KPIs with
    rows of their own (distributions, cohorts, per period) get a table each."""
    _, db = simulated
    computed = _json([], db)["kpis"]
    kinds = {k.name: k for k in KPIS.values()}
    scalars = [k for k in computed if not kinds[k["kpi"]].table
               and not kinds[k["kpi"]].per_period and len(k["rows"]) <= 1
               and set(k["rows"][0] if k["rows"] else {}) <= set(kinds[k["kpi"]].values)]
    rowed = [k for k in computed if k not in scalars]
    assert len(scalars) > 20 and rowed  # the shape below is not trivially met
    result = runner.invoke(app, ["kpis", "--database", db], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum("┏" in line for line in lines) == 1 + len(rowed)  # tables drawn
    assert lines[0].strip() == f"{len(scalars)} KPIs"
    header = next(line for line in lines if "┃" in line)
    assert [c.strip() for c in header.strip("┃").split("┃")] == ["kpi", "value", "unit", "stage"]
    body = lines[lines.index(next(line for line in lines if "┡" in line)) + 1:]
    cells = [[c.strip() for c in line.strip("│").split("│")]
             for line in body[:next(i for i, line in enumerate(body) if "└" in line)]]
    sessions = next(k for k in scalars if k["kpi"] == "sessions")["rows"][0]["sessions"]
    assert ["sessions", f"{sessions:,}", "sessions", "consideration"] in cells
    rate = next(k for k in scalars if k["kpi"] == "conversion_rate")["rows"][0]
    at = cells.index(next(c for c in cells if c[0] == "conversion_rate"))
    assert [c[:2] for c in cells[at + 1:at + 3]] == [
        ["visitors", f"{rate['visitors']:,}"], ["converters", f"{rate['converters']:,}"]]
    assert {c[0].split(" (")[0] for c in cells if c[3]} == {k["kpi"] for k in scalars}
    for k in rowed:  # their own tables, titled as before
        assert f"{k['kpi']} ({k['stage']};" in " ".join(result.stdout.split())


def test_kpis_csv_is_safe_and_errors_name_the_nearest(simulated: tuple[Path, str]) -> None:
    _, db = simulated
    result = runner.invoke(app, ["kpis", "--kpi", "paid_cost", "--by", "campaign",
                                 "--format", "csv", "--database", db])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == '"kpi","campaign","paid_cost"'
    assert "\"paid_cost\",\"'=HYPERLINK(1)\",5.5" in result.stdout
    for args, message in (
            (["--kpi", "paid_cpc", "--by", "chanel"], "did you mean 'channel'"),
            (["--kpi", "roass"], "unknown KPI 'roass' (did you mean 'roas'?)"),
            (["--stage", "advocasy"], "did you mean 'advocacy'"),
            (["--kpi", "cpa", "--model", "markof"], "model 'markof' (did you mean 'markov'?)"),
            (["--kpi", "paid_cost", "--by", "segment"], "only survey answers hold a segment"),
            (["--kpi", "nps", "--since", "May"], "--since 'May': expected a date")):
        result = runner.invoke(app, ["kpis", *args, "--database", db])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_kpis_by_stage_model_follow_its_stages(simulated: tuple[Path, str]) -> None:
    data, db = simulated
    listed = _json(["--list", "--stage-model", "hourglass"], db)
    assert listed["stage_model"] == "hourglass"
    stages = {s["stage"]: s["kpis"] for s in listed["model_stages"]}
    assert list(stages) == ["know", "like", "trust", "try", "buy", "repeat", "refer"]
    assert stages["trust"] == [] and "nps" in stages["refer"] and "cpa" in stages["buy"]
    assert {k["kpi"]: k["model_stage"] for k in listed["kpis"]}["search_ctr"] == "know"
    # the funnel's bottom stage computed: retention and advocacy KPIs, values as --kpi gives
    bottom = _json(["--stage-model", "funnel", "--stage", "bottom"], db)
    assert [s["stage"] for s in bottom["model_stages"]] == ["bottom"]
    shown = [k["kpi"] for k in bottom["kpis"]]
    assert {"repeat_purchase_rate", "retention", "nps"} <= set(shown)
    assert {k["model_stage"] for k in bottom["kpis"]} == {"bottom"}
    scores = pd.read_csv(data / "surveys.csv").nps_score.dropna()
    nps = next(k for k in bottom["kpis"] if k["kpi"] == "nps")["rows"][0]
    assert nps["nps"] == pytest.approx(
        100 * ((scores >= 9).sum() - (scores <= 6).sum()) / len(scores))
    # the table: one heading per stage in the model's order
    result = runner.invoke(app, ["kpis", "--stage-model", "hourglass", "--kpi", "nps",
                                 "--kpi", "search_clicks", "--database", db])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # titles wrap at the console's width
    # each stage's one-value KPIs in one summary table under its heading
    assert out.index("hourglass: know") < out.index("1 KPI of hourglass: know") \
        < out.index("search_clicks") < out.index("hourglass: refer") \
        < out.index("1 KPI of hourglass: refer") < out.index("nps")
    assert "hourglass: like" not in out  # --kpi: only the stages of the KPIs asked
    csv = runner.invoke(app, ["kpis", "--stage-model", "b2b", "--kpi", "search_clicks",
                              "--format", "csv", "--database", db])
    assert csv.stdout.splitlines()[:2] == [
        '"kpi","model_stage","search_clicks"', f'"search_clicks","first touch",'
        f'{int(pd.read_csv(data / "search_console.csv").clicks.sum())}']
    for args, message in (
            (["--stage-model", "hourglas"], "did you mean 'hourglass'"),
            (["--stage-model", "funnel", "--stage", "middel"],
             "--stage 'middel' (did you mean 'middle'?) is not a stage of stage model"),
            (["--stage-model", "b2b", "--stage", "SQL"], "no KPI belongs to stage 'SQL'"),
            (["--stage-model", "b2b", "--stage", "opportunity", "--kpi", "nps"],
             "--kpi nps not of stage 'opportunity'")):
        result = runner.invoke(app, ["kpis", *args, "--database", db])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)


# ---- social, reviews, NPS and retention against the simulator's truth -----------------------

@pytest.fixture(scope="module")
def warehouse(simulated: tuple[Path, str]) -> tuple[dict[str, Any], str]:
    """The truth's ``kpis`` section of the simulated files, and the warehouse."""
    data, db = simulated
    return json.loads((data / "truth.json").read_text())["kpis"], db


def _rows(db: str, *args: str) -> list[dict[str, Any]]:
    return _json(args, db)["kpis"][0]["rows"]  # type: ignore[no-any-return]


def test_nps_recovers_the_true_answers_overall_and_by_segment(
        warehouse: tuple[dict[str, Any], str]) -> None:
    truth, db = warehouse
    fields = ("answers", "promoters", "passives", "detractors")
    overall = _rows(db, "--kpi", "nps")[0]
    assert {f: overall[f] for f in fields} == {f: truth["nps"]["overall"][f] for f in fields}
    assert overall["nps"] == pytest.approx(truth["nps"]["overall"]["nps"])
    assert truth["nps"]["overall"]["answers"] >= 10  # a check on a handful would prove little
    got = {r["segment"]: r for r in _rows(db, "--kpi", "nps", "--by", "segment")}
    assert set(got) == set(truth["nps"]["by_segment"])
    for segment, want in truth["nps"]["by_segment"].items():
        assert {f: got[segment][f] for f in fields} == {f: want[f] for f in fields}, segment
        assert got[segment]["nps"] == pytest.approx(want["nps"])


def test_reviews_recover_the_true_counts_ratings_and_stars_by_platform(
        warehouse: tuple[dict[str, Any], str]) -> None:
    truth, db = warehouse
    got = {r["platform"]: r for r in _rows(db, "--kpi", "review_rating", "--by", "platform")}
    assert set(got) == {"google", "survey", "trustpilot"} == set(truth["reviews"])
    for platform, want in truth["reviews"].items():
        assert got[platform]["reviews"] == want["reviews"], platform
        assert got[platform]["review_rating"] == pytest.approx(want["average_rating"])
    stars = _rows(db, "--kpi", "review_distribution", "--by", "platform")
    assert {(r["platform"], str(r["stars"])): r["reviews"] for r in stars} == {
        (p, k): n for p, want in truth["reviews"].items() for k, n in want["stars"].items()
        if n}


def test_social_recovers_the_true_followers_growth_reach_and_engagements(
        warehouse: tuple[dict[str, Any], str]) -> None:
    truth, db = warehouse

    def by_platform(kpi: str) -> dict[str, dict[str, Any]]:
        return {r["platform"]: r for r in _rows(db, "--kpi", kpi, "--by", "platform")}

    followers, growth = by_platform("social_followers"), by_platform("social_follower_growth")
    reach, engaged = by_platform("social_reach"), by_platform("social_engagements")
    assert set(followers) == set(truth["social"]) == {"instagram", "facebook", "tiktok"}
    for platform, want in truth["social"].items():
        assert followers[platform]["followers"] == want["followers_end"], platform
        assert growth[platform]["followers_before"] == want["followers_start"], platform
        assert growth[platform]["new_followers"] == want["new_followers"], platform
        assert (reach[platform]["posts"], reach[platform]["social_reach"]) == (
            want["posts"], want["impressions"]), platform
        assert {k: engaged[platform][k] for k in ("engagements", "likes", "comments",
                                                   "shares")} == {
            k: want[k] for k in ("engagements", "likes", "comments", "shares")}, platform
        assert engaged[platform]["engagement_rate"] == pytest.approx(
            want["engagements"] / want["impressions"])


def test_repeat_purchase_and_retention_cohorts_recover_the_true_orders(
        warehouse: tuple[dict[str, Any], str]) -> None:
    truth, db = warehouse
    want = truth["retention"]
    repeat = _rows(db, "--kpi", "repeat_purchase_rate")[0]
    assert (repeat["customers"], repeat["repeat_customers"]) == (
        want["customers"], want["repeat_customers"])
    assert repeat["repeat_purchase_rate"] == pytest.approx(want["repeat_purchase_rate"])
    cohorts = _rows(db, "--kpi", "retention")
    assert [(r["cohort"], r["months_since"], r["customers"], r["active_customers"])
            for r in cohorts] == [(c["cohort"], c["months_since"], c["customers"],
                                   c["active_customers"]) for c in want["cohorts"]]
    assert sum(c["customers"] for c in want["cohorts"] if c["months_since"] == 0) == (
        want["customers"])


@pytest.fixture(scope="module")
def b2b(tmp_path_factory: pytest.TempPathFactory) -> str:
    """John's warehouse: his won deal the only conversion with value, no purchases, no spend."""
    from factories import john_run_file

    from touchline.config import Settings

    folder = tmp_path_factory.mktemp("b2b")
    return john_run_file(folder / "wh.duckdb", Settings(
        temp_directory=folder, attribution_models=["linear"], default_model="linear"))


def test_kpis_default_to_the_conversion_with_the_most_value(b2b: str) -> None:
    """No --conversion on a B2B warehouse: the won deals (as the report and dashboard
    choose), not purchases that have no journeys."""
    out = _json(["--kpi", "conversions"], b2b)
    rows = out["kpis"][0]["rows"]
    assert [r["conversions"] for r in rows] == pytest.approx([1.0])
    assert out["skipped"] == []


def test_several_kpis_in_one_option_and_one_without_its_input_is_skipped(b2b: str) -> None:
    """`--kpi conversions,revenue` (or repeated --kpi) asks for both; with several asked, cpa
    (no spend imported) is skipped with its reason, not the end of the command; alone it
    still fails."""
    both = _json(["--kpi", "conversions,revenue"], b2b)
    assert [k["kpi"] for k in both["kpis"]] == ["conversions", "revenue"]
    assert both["kpis"][1]["rows"][0]["revenue"] == pytest.approx(1800.0)
    some = _json(["--kpi", "conversions", "--kpi", "cpa"], b2b)
    assert [k["kpi"] for k in some["kpis"]] == ["conversions"]
    assert [s["kpi"] for s in some["skipped"]] == ["cpa"]
    assert "spend" in some["skipped"][0]["reason"]
    alone = runner.invoke(app, ["kpis", "--kpi", "cpa", "--database", b2b])
    assert alone.exit_code != 0
    assert "spend" in alone.output


@pytest.fixture(scope="module")
def deals_left_out(tmp_path_factory: pytest.TempPathFactory) -> str:
    """John's warehouse with three more won deals that convert for no one: two name no one,
    one names a stranger."""
    from factories import JOHN_DEAL, john_run_file

    from touchline.config import Settings

    won = {"status": "Closed Won", "amount": 100.0, "closed_at": "2026-03-21 10:00:00"}
    folder = tmp_path_factory.mktemp("left_out")
    return john_run_file(folder / "wh.duckdb", Settings(
        temp_directory=folder, attribution_models=["linear"], default_model="linear"),
        deals=[*JOHN_DEAL, {"deal_id": "D2", **won}, {"deal_id": "D3", **won},
               {"deal_id": "D4", "contact_emails": "stranger@z.io", **won}])


LEFT_OUT = ("warning: 3 won deals are left out of conversion 'deal_won': 2 name no "
            "account_id, contact_emails or contact_ids (map one of them when importing deals: "
            "docs/ingest.md); 1 name only accounts or people not seen in events")


def test_kpis_of_a_deal_conversion_warn_of_the_won_deals_left_out_as_run_does(
        deals_left_out: str, tmp_path: Path) -> None:
    """`touchline kpis --conversion deal_won` says what `touchline run` says: how many won
    deals no conversion could name, and why (on stderr: JSON stays clean)."""
    result = runner.invoke(app, ["kpis", "--kpi", "conversions", "--conversion", "deal_won",
                                 "--format", "json", "--database", deals_left_out])
    assert result.exit_code == 0, result.output
    assert [r["conversions"] for r in json.loads(result.stdout)["kpis"][0]["rows"]] == (
        pytest.approx([1.0]))  # John's deal only
    assert LEFT_OUT in " ".join(result.stderr.split())
    # the same sentence as the run's
    run = runner.invoke(app, ["run", "--database", deals_left_out], env={"COLUMNS": "300"})
    assert run.exit_code == 0, run.output
    assert LEFT_OUT in " ".join(run.stderr.split())
    # and the report's, when it shows deal_won (the conversion with the most value here)
    report = runner.invoke(app, ["report", "--out", str(tmp_path / "r.html"),
                                 "--database", deals_left_out])
    assert report.exit_code == 0, report.output
    assert LEFT_OUT in " ".join(report.stderr.split())
    # not for KPIs that do not count conversions, nor for another conversion
    for args in (["--kpi", "sessions", "--conversion", "deal_won"],
                 ["--kpi", "leads", "--conversion", "lead"]):
        other = runner.invoke(app, ["kpis", *args, "--database", deals_left_out])
        assert other.exit_code == 0, other.output
        assert "left out" not in other.stderr, args
