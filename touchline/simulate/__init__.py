"""Realistic, deterministic data with a known right answer: ``simulate(people, seed, out)``.

The simulator writes the files a user would ingest (Segment NDJSON and/or Parquet events,
deals, spend, calls, surveys, reviews, social and Search Console CSVs) plus ``truth.json``
and ``paths.csv``, the ground truth every later stage can be checked against. People are
generated in chunks (``chunk_people`` at a time) and written as they are made, so memory does
not grow with ``people``. The data flow::

    population → journeys (exposures, causal model, counterfactuals, timeline)
               → events (+ mess) → writers;   sources (deals, calls, surveys, reviews, spend,
                                                GSC, social);
               truth (counts, incremental effects, paths)

Same seed and arguments give byte-identical files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from touchline.errors import SimulationError
from touchline.simulate import channels as ch
from touchline.simulate import events, journeys, model, population, sources, writers
from touchline.simulate.model import SeasonalDip
from touchline.simulate.truth import Truth, write_json

__all__ = ["FORMATS", "SeasonalDip", "SimulationSummary", "simulate"]

log = logging.getLogger(__name__)

FORMATS = ("ndjson", "parquet", "both")
CHUNK_PEOPLE_DEFAULT = 50_000
MAX_PEOPLE = 200_000_000
PEOPLE_PER_ACCOUNT_DEFAULT = 5
ID_NAMESPACES = 16  # entity ids hold 16 bits of chunk key: 16 namespaces x 4096 chunks
MAX_CHUNKS = 4096
SIMULATED_DAYS = 900  # spend and Search Console cover this many days from 2025-01-01
# deals' properties hold a real export's extra columns; the simulator's deals have none;
# spend's imported_channel and channel_matched are written by prepare, never by an export
SIMULATED_SKIP = ("row_hash", "source", "ingest_id", "properties", "imported_channel",
                  "channel_matched")
CSV_FILES = ("deals.csv", "calls.csv", "surveys.csv", "reviews.csv", "spend.csv",
             "search_console.csv", "social.csv")


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation wrote: where, how much, and how long it took."""

    out: Path
    files: tuple[Path, ...]
    people: int
    accounts: int
    events_written: int
    unique_events: int
    conversions: int
    revenue: float
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events_written / self.seconds if self.seconds else 0.0


def _check(people: int, seed: int, b2b: bool, accounts: int | None, fmt: str,
           chunk_people: int, out: Path) -> None:
    if not isinstance(people, int) or not 1 <= people <= MAX_PEOPLE:
        raise SimulationError(f"people={people!r} is out of range: give a whole number from 1 "
                              f"to {MAX_PEOPLE:,}")
    if not isinstance(seed, int) or seed < 0:
        raise SimulationError(f"seed={seed!r} must be a non-negative whole number")
    if fmt not in FORMATS:
        raise SimulationError(f"format={fmt!r} is not known; choose from {', '.join(FORMATS)}")
    if accounts is not None:
        if not b2b:
            raise SimulationError("accounts is only meaningful in B2B mode: add --b2b or drop "
                                  "--accounts")
        if not 1 <= accounts <= people:
            raise SimulationError(f"accounts={accounts!r} must be between 1 and people={people} "
                                  "(every account needs at least one person)")
    if chunk_people < 1:
        raise SimulationError(f"chunk_people={chunk_people!r} must be at least 1")
    if out.exists() and not out.is_dir():
        raise SimulationError(f"out={str(out)!r} exists and is not a directory")


def _chunks(sizes: np.ndarray, chunk_people: int) -> list[tuple[int, int]]:
    """Unit ranges ``[lo, hi)`` holding about ``chunk_people`` people each (whole units)."""
    cumulative = np.cumsum(sizes)
    bounds = [0]
    while bounds[-1] < len(sizes):
        done = int(cumulative[bounds[-1] - 1]) if bounds[-1] else 0
        nxt = int(np.searchsorted(cumulative, done + chunk_people, side="right"))
        bounds.append(max(nxt, bounds[-1] + 1))
    bounds[-1] = min(bounds[-1], len(sizes))
    return list(pairwise(bounds))


def simulate(
    people: int,
    seed: int,
    out: Path | str,
    *,
    b2b: bool = False,
    accounts: int | None = None,
    fmt: str = "ndjson",
    chunk_people: int = CHUNK_PEOPLE_DEFAULT,
    gzip_level: int = writers.GZIP_LEVEL_DEFAULT,
    seasonal_dip: SeasonalDip | None = None,
) -> SimulationSummary:
    """Simulate ``people`` people (B2B: in ``accounts`` companies) and write every file to
    ``out``.

    Parameters
    ----------
    people, seed
        How many people, and the seed that fixes everything (same seed → same bytes).
    out
        Folder for the files (created if missing; files of a previous run are replaced).
    b2b
        Companies with several stakeholders, long journeys and CRM deals per account.
    accounts
        Number of companies in B2B mode (default ``people // 5``).
    fmt
        ``ndjson`` (Segment export, ``events.ndjson.gz``), ``parquet`` (canonical flat
        columns, ``events.parquet``) or ``both``.
    chunk_people
        People generated and written at a time; bounds memory.
    seasonal_dip
        Repeat orders (renewals; B2B: expansion deals) drop every year in one calendar month
        (:class:`SeasonalDip`); ``truth.json`` then states the dip under
        ``kpis.retention.seasonal_dip``. Off by default: without it the files are those of a
        simulator that has no such option.
    """
    out = Path(out)
    _check(people, seed, b2b, accounts, fmt, chunk_people, out)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    params = ch.parameters(b2b=b2b)
    constants = model.B2B_MODEL if b2b else model.B2C_MODEL
    timing = journeys.B2B_TIMING if b2b else journeys.B2C_TIMING
    if b2b:
        n_accounts = accounts or max(1, people // PEOPLE_PER_ACCOUNT_DEFAULT)
        sizes = population.account_sizes(people, n_accounts, np.random.default_rng([seed, 1]))
    else:
        n_accounts = 0
        sizes = np.ones(people, np.int64)

    truth = Truth(seed=seed, people=people, b2b=b2b, seasonal_dip=seasonal_dip)
    spend = sources.SpendAccumulator(SIMULATED_DAYS)
    search_console = sources.SearchConsoleAccumulator(SIMULATED_DAYS)
    event_writer = writers.EventWriter(out, fmt, gzip_level=gzip_level)
    csv_writers = {
        "deals.csv": writers.CsvWriter(
            out / "deals.csv", writers.table_columns("deals", skip=SIMULATED_SKIP)
        ),
        "calls.csv": writers.CsvWriter(
            out / "calls.csv", writers.table_columns("calls", skip=SIMULATED_SKIP)
        ),
        "surveys.csv": writers.CsvWriter(out / "surveys.csv", writers.table_columns("surveys")),
        "reviews.csv": writers.CsvWriter(out / "reviews.csv", writers.table_columns("reviews")),
    }
    first_person = 0
    try:
        # entity ids (orders, calls, chats, answers) are unique per chunk key; the key also
        # carries the seed and mode, so two data sets can share one warehouse
        namespace = ((2 * seed + int(b2b)) % ID_NAMESPACES) * MAX_CHUNKS
        for number, (lo, hi) in enumerate(_chunks(sizes, chunk_people)):
            rng = np.random.default_rng([seed, 2, int(b2b), number])
            pop = population.build_population(
                rng, first_person=first_person, unit_global=np.arange(lo, hi),
                unit_sizes=sizes[lo:hi], b2b=b2b)
            first_person += pop.people
            # the dip's own random stream: the other draws stay as they are without it
            dip_rng = (None if seasonal_dip is None
                       else np.random.default_rng([seed, 6, int(b2b), number]))
            chunk = journeys.build_journeys(pop, rng, params=params, constants=constants,
                                            timing=timing, dip=seasonal_dip, dip_rng=dip_rng)
            answers, reviews = sources.surveys(pop, chunk, rng, chunk=namespace + number)
            rendered = events.render(pop, chunk, reviews, rng, chunk=namespace + number)
            rendered.mess["schema_change_user_agent"] += writers.schema_change_rows(rendered)
            event_writer.write(rendered)
            deals = sources.deals(pop, chunk, rng)
            call_rows, spam = sources.calls(pop, chunk, rng, chunk=namespace + number)
            rendered.mess["spam_calls"] += spam
            csv_writers["deals.csv"].write(deals)
            csv_writers["calls.csv"].write(call_rows)
            csv_writers["surveys.csv"].write(answers)
            spend.add(rendered.landings)
            search_console.add(rendered.landings, rng)
            truth.add(pop, chunk, rendered)
            # the reviews' own random stream: the files above stay as they were without them
            review_rows = sources.reviews(
                pop, chunk, reviews, np.random.default_rng([seed, 4, int(b2b), number]),
                chunk=namespace + number)
            csv_writers["reviews.csv"].write(review_rows)
            truth.add_sources(answers, review_rows, rendered)
            log.info("chunk %d: %d people, %d events", number, pop.people, rendered.written)
    finally:
        event_writer.close()
        for w in csv_writers.values():
            w.close()

    final_rng = np.random.default_rng([seed, 3, int(b2b)])
    spend_rows, spend_totals = spend.rows(final_rng)
    spend_writer = writers.CsvWriter(out / "spend.csv", writers.table_columns(
        "spend", skip=SIMULATED_SKIP))
    gsc_writer = writers.CsvWriter(out / "search_console.csv",
                                   writers.table_columns("search_console"))
    try:
        for piece in sources.chunks_of(spend_rows, 100_000):
            spend_writer.write(piece)
        for piece in sources.chunks_of(search_console.rows(final_rng), 100_000):
            gsc_writer.write(piece)
    finally:
        spend_writer.close()
        gsc_writer.close()
    social_rows, truth.social = sources.social(
        SIMULATED_DAYS, people, b2b=b2b, rng=np.random.default_rng([seed, 5, int(b2b)]))
    social_writer = writers.CsvWriter(out / "social.csv", writers.table_columns("social"))
    try:
        social_writer.write(social_rows)
    finally:
        social_writer.close()
    files = {p.name: p.stat().st_size for p in event_writer.files}
    files.update({name: (out / name).stat().st_size for name in CSV_FILES})
    path_rows = truth.write_paths(out / "paths.csv")
    files["paths.csv"] = (out / "paths.csv").stat().st_size
    document = truth.document(files=files, spend=spend_totals)
    document["counts"]["distinct_paths"] = path_rows
    document["counts"]["spend"] = round(sum(spend_totals.values()), 2)
    write_json(out / "truth.json", document)
    seconds = time.perf_counter() - started
    counts = truth.counts
    log.info("simulated %d people, %d events in %.1f s", people, counts["events_written"],
             seconds)
    return SimulationSummary(
        out=out,
        files=(*event_writer.files, *(out / n for n in CSV_FILES), out / "paths.csv",
               out / "truth.json"),
        people=people, accounts=n_accounts, events_written=counts["events_written"],
        unique_events=counts["unique_events"], conversions=counts["conversions"],
        revenue=round(truth.revenue, 2), seconds=seconds,
    )
