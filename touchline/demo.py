"""The demo: simulate → ingest → the production run (:func:`touchline.pipeline.run`) → truth.

``run_demo`` is what ``touchline demo`` and ``make demo`` run: it simulates a data set with
ground truth, loads it like a user's files, runs the same :func:`~touchline.pipeline.run` a
user's ``touchline run`` does, and returns a :class:`DemoReport` whose figures the CLI prints
next to the truth they should match.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from touchline import engine, store
from touchline.config import Settings

log = logging.getLogger(__name__)

DEMO_PEOPLE_DEFAULT = 20_000
DEMO_B2B_PEOPLE_DEFAULT = 3_000
DEMO_B2B_ACCOUNTS_DEFAULT = 300
DEMO_SEED_DEFAULT = 7
DEMO_FILES = (  # (kind, file name written by the simulator)
    ("events", "events.ndjson.gz"),
    ("deals", "deals.csv"),
    ("spend", "spend.csv"),
    ("calls", "calls.csv"),
    ("surveys", "surveys.csv"),
    ("search_console", "search_console.csv"),
    ("reviews", "reviews.csv"),
    ("social", "social.csv"),
)
# GA4 channel groups (prepare) → the simulator's channel names (truth.json), to score models
# run on prepared journeys against the truth
SIMULATOR_CHANNELS = {
    "Organic Search": "organic_search", "Paid Search": "paid_search", "Paid Social":
    "paid_social", "Organic Social": "organic_social", "Email": "email", "Display": "display",
    "Organic Video": "video", "Paid Video": "video", "Referral": "referral", "Affiliates":
    "affiliate", "Direct": "direct", "SMS": "sms", "Phone": "phone", "Offline": "offline",
}
#: the headline KPIs the demo prints, a few per lifecycle stage (each one query: the demo
#: stays fast; `touchline kpis` computes them all)
DEMO_KPIS = ("new_visitors", "search_ctr", "paid_cpc",
             "sessions", "engagement_rate", "visits_to_convert", "cta_ctr",
             "conversion_rate", "leads", "cpa", "roas",
             "repeat_purchase_rate", "average_order_value", "historical_clv",
             "nps", "review_rating")
DEMO_MODELS = ("first_touch", "last_touch", "last_non_direct", "linear", "position_based",
               "markov", "shapley", "counterfactual", "journey_counterfactual")


@dataclass
class DatasetReport:
    """One simulated data set run through the stages, with its truth."""

    name: str
    folder: Path
    truth: dict[str, Any]
    ingested: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # loaded, rej, dup
    checks: list[tuple[str, int | float, int | float]] = field(default_factory=list)
    comparison: pd.DataFrame | None = None
    ranking: pd.DataFrame | None = None
    prepared_ranking: pd.DataFrame | None = None
    #: what ``auto`` picked on the true paths and on the prepared journeys, and why
    auto: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoReport:
    """What the demo did and where its results are."""

    database_url: str
    data_folder: Path
    datasets: list[DatasetReport] = field(default_factory=list)
    sessions_by_channel: pd.DataFrame | None = None
    prepare_seconds: float | None = None
    run: Any = None  # the pipeline's RunReport
    #: the self-contained HTML report of the demo warehouse (``touchline report``)
    report_path: Path | None = None
    #: charts the report could not draw, with why
    report_skipped: dict[str, str] = field(default_factory=dict)
    #: the headline KPIs by lifecycle stage (``stage``, ``kpi``, ``value``, ``unit``), with the
    #: ones that could not be computed in ``attrs["skipped"]``
    stage_kpis: pd.DataFrame | None = None


Progress = Callable[[str], None]


def run_demo(
    settings: Settings,
    *,
    data_folder: Path,
    people: int = DEMO_PEOPLE_DEFAULT,
    b2b_people: int = DEMO_B2B_PEOPLE_DEFAULT,
    b2b_accounts: int = DEMO_B2B_ACCOUNTS_DEFAULT,
    seed: int = DEMO_SEED_DEFAULT,
    via_http: bool = False,
    progress: Progress = log.info,
) -> DemoReport:
    """Simulate a B2C and a B2B data set, load them into one warehouse, run every stage.

    With ``via_http`` the events are replayed through the real collector (Segment HTTP API,
    durable spool, loader) instead of being ingested from the file; the other files are
    ingested either way, and every check against the truth must come out the same.
    """
    from touchline.collect.ingest import ingest_file
    from touchline.collect.replay import replay_events
    from touchline.simulate import simulate

    report = DemoReport(settings.database_url, data_folder)
    con = engine.connect(settings=settings)
    for table in (*store.INGESTIBLE, "rejects", "ingests"):
        con.drop_table(table, force=True)  # the demo warehouse is rebuilt from scratch
    store.init(con)
    specs = [("b2c", people, False, None, seed), ("b2b", b2b_people, True, b2b_accounts, seed + 1)]
    for name, n, b2b, accounts, run_seed in specs:
        folder = data_folder / name
        progress(f"simulating {n:,} {'B2B ' if b2b else ''}people into {folder}")
        simulate(n, run_seed, folder, b2b=b2b, accounts=accounts)
        truth = json.loads((folder / "truth.json").read_text())
        dataset = DatasetReport(name, folder, truth)
        for kind, file in DEMO_FILES:
            if kind == "events" and via_http:
                progress(f"replaying {folder / file} through the collector's HTTP API")
                con.disconnect()  # the collector's loader is the warehouse's one writer
                replayed = replay_events(folder / file, settings)
                con = engine.connect(settings=settings)
                dataset.ingested[kind] = (replayed.loaded, replayed.rejected,
                                          replayed.acknowledged - replayed.loaded)
                continue
            progress(f"ingesting {folder / file}")
            result = ingest_file(con, folder / file, kind, settings=settings, source=None)
            dataset.ingested[kind] = (result.loaded, result.rejected, result.duplicates)
        report.datasets.append(dataset)
    _check_ingest(con, report)
    _run(con, settings, report, progress)
    _check_prepared(con, report)
    for dataset in report.datasets:
        _attribute(dataset, progress)
        _attribute_prepared(con, dataset, report, progress)
    _stage_kpis(con, settings, report, progress)
    _check_kpis(con, report)
    _write_report(con, settings, report, progress)
    con.disconnect()
    return report


REPORT_FILE = "report.html"


def _stage_kpis(con: Any, settings: Settings, report: DemoReport, progress: Progress) -> None:
    """A few headline KPIs of each lifecycle stage, as `touchline kpis` computes them."""
    from touchline.serve.figures import stage_kpis_data

    progress(f"computing {len(DEMO_KPIS)} headline KPIs")
    report.stage_kpis = stage_kpis_data(con, model=settings.default_model,
                                        stage_model="lifecycle", names=DEMO_KPIS)


def _write_report(con: Any, settings: Settings, report: DemoReport, progress: Progress) -> None:
    """The demo ends as a user's run would: ``touchline report`` into the data folder."""
    from touchline.serve.figures import Filters
    from touchline.serve.report import write_report

    progress(f"writing {report.data_folder / REPORT_FILE}")
    result = write_report(con, report.data_folder / REPORT_FILE,
                          Filters(model=settings.default_model,
                                  stage_model=settings.stage_model,
                                  truth=tuple(d.folder / "truth.json" for d in report.datasets)),
                          database=settings.database_url)
    report.report_path = result.path
    report.report_skipped = result.skipped


def _check_ingest(con: Any, report: DemoReport) -> None:
    """Loaded events against the truth: every distinct messageId (bots included) lands once."""
    events = con.table("events")
    distinct = int(events.message_id.nunique().to_pyarrow().as_py())
    expected = sum(
        d.truth["counts"]["unique_events"] + d.truth["counts"].get("bot_events", 0)
        for d in report.datasets
    )
    report.datasets[0].checks.append(("distinct events loaded (incl. bots)", distinct, expected))


def _check_kpis(con: Any, report: DemoReport) -> None:
    """The social, review, NPS and retention KPIs against the truth of both data sets (their
    counts add up: the data sets share no person, account or review)."""
    from touchline.metrics.kpis import compute

    def truth(get: Callable[[dict[str, Any]], int]) -> int:
        return sum(get(dataset.truth["kpis"]) for dataset in report.datasets)

    def platforms(section: str, key: str) -> Callable[[dict[str, Any]], int]:
        return lambda kpis: sum(p[key] for p in kpis[section].values())

    def one(name: str, column: str) -> int:
        return int(compute(con, name).to_pandas()[column].sum())

    nps = compute(con, "nps").to_pandas().iloc[0]
    answers = truth(lambda k: k["nps"]["overall"]["answers"])
    net = truth(lambda k: k["nps"]["overall"]["promoters"] - k["nps"]["overall"]["detractors"])
    report.datasets[0].checks += [
        ("NPS answers (surveys)", int(nps.answers), answers),
        ("NPS", round(float(nps.nps), 6), round(100 * net / answers, 6)),
        ("reviews (review exports and survey ratings)", one("review_rating", "reviews"),
         truth(platforms("reviews", "reviews"))),
        ("social followers at the end", one("social_followers", "followers"),
         truth(platforms("social", "followers_end"))),
        ("social engagements", one("social_engagements", "engagements"),
         truth(platforms("social", "engagements"))),
        ("customers (purchases)", one("repeat_purchase_rate", "customers"),
         truth(lambda k: k["retention"]["customers"])),
        ("repeat customers", one("repeat_purchase_rate", "repeat_customers"),
         truth(lambda k: k["retention"]["repeat_customers"])),
    ]


def _truth_sum(report: DemoReport, *keys: str, minus: str | None = None) -> int:
    total = 0
    for dataset in report.datasets:
        counts, mess = dataset.truth["counts"], dataset.truth.get("mess", {})
        total += sum(int(counts.get(k, 0)) for k in keys) - int(mess.get(minus, 0) if minus else 0)
    return total


def _check_prepared(con: Any, report: DemoReport) -> None:
    """Prepared tables against the truth: touches, web sessions, devices, persons."""
    touchpoints, sessions, persons = (con.table(t) for t in ("touchpoints", "sessions", "persons"))
    checks = report.datasets[0].checks
    checks.append(("unique touches (touchpoints)", int(touchpoints.count().to_pyarrow().as_py()),
                   _truth_sum(report, "unique_events", minus="cross_source_forms")))
    web = sessions.filter(sessions.anonymous_id.notnull()).count().to_pyarrow().as_py()
    checks.append(("web sessions (30-minute rule)", int(web), _truth_sum(report, "sessions")))
    devices = touchpoints.anonymous_id.nunique().to_pyarrow().as_py()
    checks.append(("anonymous ids (devices)", int(devices), _truth_sum(report, "anonymous_ids")))
    identified = persons.filter(persons.user_id.notnull()).count().to_pyarrow().as_py()
    checks.append(("identified persons (with a user id)", int(identified),
                   _truth_sum(report, "identified_persons")))
    checks.append(("persons (identity graph components)", int(persons.count().to_pyarrow()
                                                              .as_py()),
                   _truth_sum(report, "resolvable_persons")))
    accounts = con.table("accounts")
    checks.append(("B2B accounts (named by a group call or e-mail)",
                   int(accounts.count().to_pyarrow().as_py()),
                   _truth_sum(report, "resolvable_accounts")))


def _run(con: Any, settings: Settings, report: DemoReport, progress: Progress) -> None:
    from touchline.pipeline import run

    report.run = run(con, settings, progress=progress)
    report.prepare_seconds = report.run.seconds.get("prepare")
    sessions = con.table("sessions")
    by_channel = sessions.group_by("channel").aggregate(sessions=sessions.count())
    report.sessions_by_channel = by_channel.order_by(by_channel.sessions.desc()).to_pandas()


def _attribute(dataset: DatasetReport, progress: Progress) -> None:
    from touchline.attribution import compare
    from touchline.attribution.evaluate import evaluate, truth_from_dict
    from touchline.attribution.path_files import read_path_file

    progress(f"attributing {dataset.name} journeys with {len(DEMO_MODELS)} models and auto")
    paths = read_path_file(dataset.folder / "paths.csv")
    dataset.comparison = with_auto(compare(paths, list(DEMO_MODELS)), paths, dataset,
                                   "true paths")
    truth = truth_from_dict(dataset.truth, source=str(dataset.folder / "truth.json"))
    dataset.ranking = evaluate(dataset.comparison, truth)


#: the simulator's conversion in each data set: a conversion type of the default settings and
#: the unit the truth counts (a B2C sale closed in the CRM is a person's deal_won, not the B2B
#: data set's)
DEMO_CONVERSIONS = {"b2c": ("purchase", "person"), "b2b": ("deal_won", "account")}


def first_conversion_touches(con: Any, conversion: str, unit: str) -> Any:
    """The stored journey touches of ``conversion`` as the truth counts them: each unit's
    first conversion, and the touches of units that never converted."""
    touches = con.table("journey_touches")
    mine = touches.filter((touches.conversion == conversion) & (touches.unit == unit))
    converters = mine.filter(mine.converted).select("unit_id").distinct()
    return mine.filter(mine.converted & (mine.sequence == 1)).union(
        mine.filter(~mine.converted).anti_join(converters, "unit_id"), distinct=False)


def matching_channels(prepared: Any, true: Any) -> int:
    """The channels of the prepared journeys that are channels of the true paths, less those
    that are not: it equals the number of true-path channels only when both sets are the same.
    A truth channel missing from the journeys (webinars classified Direct) or a label the
    mapping does not know would make every model's score wrong, whatever its credits."""
    mine, theirs = {str(c) for c in prepared}, {str(c) for c in true}
    return len(mine & theirs) - len(mine - theirs)


def _attribute_prepared(con: Any, dataset: DatasetReport, report: DemoReport,
                        progress: Progress) -> None:
    """The same models on the journeys `touchline run` stored, scored against the truth.

    This is the whole pipeline's check: files → ingest → prepare → journeys → attribution.
    """
    from touchline.attribution import compare
    from touchline.attribution.evaluate import evaluate, truth_from_dict
    from touchline.attribution.path_files import read_path_file
    from touchline.attribution.paths import journey_pathset
    from touchline.attribution.select import HOLDOUT_DEFAULT

    progress(f"attributing {dataset.name} journeys stored by `touchline run`")
    touches = first_conversion_touches(con, *DEMO_CONVERSIONS[dataset.name])
    touches = touches.mutate(channel=touches.channel.substitute(SIMULATOR_CHANNELS))
    paths, _ = journey_pathset(touches, split_holdout=HOLDOUT_DEFAULT)
    counts = dataset.truth["counts"]
    true_labels = [str(c) for c in read_path_file(dataset.folder / "paths.csv").labels]
    report.datasets[0].checks += [
        (f"{dataset.name}: conversions on prepared journeys", round(paths.total_conversions),
         int(counts["conversions"])),
        (f"{dataset.name}: first-conversion revenue on prepared journeys",
         round(paths.total_value, 2), round(float(counts["first_order_revenue"]), 2)),
        (f"{dataset.name}: channels on prepared journeys (as on the true paths)",
         matching_channels(paths.labels, true_labels), len(set(true_labels))),
    ]
    comparison = with_auto(compare(paths, list(DEMO_MODELS)), paths, dataset,
                           "prepared journeys")
    truth = truth_from_dict(dataset.truth, source=str(dataset.folder / "truth.json"))
    dataset.prepared_ranking = evaluate(comparison, truth)


def with_auto(comparison: pd.DataFrame, paths: Any, dataset: DatasetReport,
              where: str) -> pd.DataFrame:
    """``comparison`` with a column ``auto``: the credits of the model ``auto`` picks, as
    ``touchline run`` stores them (time-based split on prepared journeys, seeded on a path
    file); the pick and why go to ``dataset.auto[where]``."""
    from touchline.attribution.select import AUTO_MODEL, FALLBACK, choose_model

    choice = choose_model(paths, fallback=FALLBACK)
    dataset.auto[where] = choice.reason
    out = comparison.copy()
    out[AUTO_MODEL] = choice.credits.conversions
    return out
