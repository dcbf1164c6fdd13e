"""The production run: prepare → journeys → attribution → stored tables, idempotent.

``run(con, settings)`` is what ``touchline run`` does on the user's own warehouse (and what the
demo does on simulated data): it prepares the ingested events, builds the journeys of every
conversion type (``journeys``, ``journey_touches``), credits every converting touch under each
model of ``settings.attribution_models`` (``credits``; the data-driven models' bootstrap
intervals in ``credit_intervals``), and returns a :class:`RunReport` whose
figures the CLI prints. Re-running replaces these tables whole.

The model ``auto`` (in the default list) is no registered model but a choice: for each
conversion type, :func:`~touchline.attribution.select.choose_model` scores the data-driven
models by held-out log-loss on a time-based split of its journeys and stores the winner's
credits under the name ``auto``, with every candidate's score in ``model_choices``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from touchline import engine, store
from touchline.config import Settings
from touchline.errors import did_you_mean

if TYPE_CHECKING:
    import ibis.expr.types as ir
    from ibis.backends import BaseBackend

    from touchline.attribution.select import Choice
    from touchline.prepare import StepProgress

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class RunReport:
    """What a run did: per conversion type its journeys, and where the tables are."""

    database_url: str
    #: per conversion type: conversions, value, open journeys, journeys shortened by the
    #: lookback, conversions without a touch in their window
    conversions: pd.DataFrame
    #: the main conversion's credits by channel under the default model
    by_channel: pd.DataFrame
    main_conversion: str | None
    model: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    prepare: Any = None
    #: conditions that name an event no touch has (with the nearest one that exists)
    warnings: list[str] = field(default_factory=list)
    #: per conversion type, what ``auto`` picked and why (``model_choices`` has the scores)
    auto: dict[str, str] = field(default_factory=dict)
    #: per conversion type and data-driven model, the channels whose bootstrap interval
    #: reaches zero credit (``credit_intervals`` has every bound)
    flagged: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: with ``markov_order = "auto"``: per conversion type and Markov model, the order picked
    #: and why (every order's held-out log-loss)
    markov_orders: dict[str, str] = field(default_factory=dict)


#: what a run does after prepare, each told to ``progress`` in a message that starts with it
#: (a progress bar counts them after prepare's steps)
RUN_PHASES = ("journeys", "credits")


def run(con: BaseBackend, settings: Settings, *, prepare: bool = True,
        progress: Progress = log.info, prepare_progress: StepProgress | None = None
        ) -> RunReport:
    """Prepare (unless ``prepare=False``), then journeys and credits; see the module.

    ``progress`` is told each phase; ``prepare_progress`` each prepare step (a progress bar).
    """
    from touchline.attribution.registry import lookup
    from touchline.attribution.select import AUTO_MODEL
    from touchline.journeys import write_journeys
    from touchline.journeys.build import JOURNEY_ROWS
    from touchline.journeys.conversions import conversion_summary, main_conversion
    from touchline.prepare import run_prepare

    for name in settings.attribution_models:
        if name != AUTO_MODEL:
            lookup(name, source="settings.attribution_models")
    if settings.default_model != AUTO_MODEL:
        lookup(settings.default_model, source="settings.default_model")
    seconds: dict[str, float] = {}
    prepared = None
    notes: list[str] = []
    started_at = datetime.now(UTC).replace(tzinfo=None)
    if prepare:
        notes += match_calls(con, settings, progress)
        progress("preparing: clean, bots, standardise, dedupe, sessions, channels, identity")
        start = time.perf_counter()
        prepared = run_prepare(con, settings, progress=prepare_progress)
        seconds["prepare"] = time.perf_counter() - start
        if settings.raw_event_retention_days is not None or settings.raw_retention_days:
            from touchline.privacy.retention import apply_retention, retention_days

            done = apply_retention(con, settings)
            days = retention_days(settings)
            progress("retention: " + ", ".join(
                f"{table} {n:,} (older than {days[table]} days)" for table, n in done.items())
                + " rows deleted or emptied (touches, journeys and credits stay)")
    store.init(con)
    progress(f"{RUN_PHASES[0]} of {len(settings.conversions)} conversion types: "
             + ", ".join(c.name for c in settings.conversions))
    start = time.perf_counter()
    # the journeys' touch rows stay for the credits: what they read of journey_touches,
    # without the view's joins to journeys and sessions
    rows = write_journeys(con, settings, keep_rows=True)
    seconds["journeys"] = time.perf_counter() - start
    progress(f"{RUN_PHASES[1]} under {len(settings.attribution_models)} models: "
             + ", ".join(settings.attribution_models))
    start = time.perf_counter()
    try:
        rows["credits"], unplaced, picks, orders = write_credits(
            con, settings, touches=con.table(JOURNEY_ROWS))
    finally:
        engine.drop_materialised(con, JOURNEY_ROWS)
    flagged = flagged_channels(con)
    seconds["credits"] = time.perf_counter() - start
    conversions = conversion_summary(con.table(store.JOURNEYS.name),
                                     [c.name for c in settings.conversions])
    main = main_conversion(conversions)
    by_channel = channel_credits(con, main, settings.default_model) if main else pd.DataFrame()
    warnings = [*notes, *unknown_events(con, settings), *unconverted_currencies(con),
                *order_notes(con), *deal_notes(con, settings), *unplaced]
    report = RunReport(settings.database_url, conversions, by_channel, main,
                       settings.default_model, rows, seconds, prepared, warnings, picks, flagged,
                       orders)
    record_run(con, report, started_at=started_at, models=settings.attribution_models)
    return report


def record_run(con: BaseBackend, report: RunReport, *, started_at: datetime,
               models: Sequence[str]) -> None:
    """Append the run's row to ``runs`` (what the dashboard shows as the last run): from
    what the run counted already, no query of its own."""
    counts = report.prepare.counts if report.prepare is not None else {}
    converted = report.conversions
    row = {
        "run_id": [report.prepare.run_id if report.prepare is not None
                   else f"run-{uuid.uuid4().hex[:12]}"],
        "started_at": [started_at],
        "finished_at": [datetime.now(UTC).replace(tzinfo=None)],
        "prepared": [report.prepare is not None],
        "touches": [counts.get("touches")],
        "sessions": [counts.get("sessions")],
        "persons": [counts.get("persons")],
        "journeys": [int((converted["conversions"] + converted["open_journeys"]).sum())],
        "conversions": [int(converted["conversions"].sum())],
        "models": [", ".join(models)],
        "warnings": [len(report.warnings)],
    }
    engine.append(con, store.RUNS.name, pa.table(row).cast(store.RUNS.schema.to_pyarrow()))


def flagged_channels(con: BaseBackend) -> dict[str, dict[str, list[str]]]:
    """From ``credit_intervals``: per conversion type and model, the flagged channels."""
    bounds = con.table(store.CREDIT_INTERVALS.name)
    rows = bounds.filter(bounds.flagged).select("conversion", "model", "channel").order_by(
        ["conversion", "model", "channel"]).to_pandas()
    out: dict[str, dict[str, list[str]]] = {}
    for row in rows.itertuples(index=False):
        out.setdefault(str(row.conversion), {}).setdefault(str(row.model), []).append(
            str(row.channel))
    return out


def match_calls(con: BaseBackend, settings: Settings, progress: Progress) -> list[str]:
    """Turn call-log rows not yet matched (``touchline ingest --kind calls``, call webhooks)
    into touches, as ``touchline calls match`` does, so that a run on a user's files includes
    their calls; a sentence about calls no number lease explains."""
    from touchline.collect.dni import match_new_calls

    store.init(con)
    calls = con.table(store.CALLS.name)
    if int(calls.count().execute()) == 0:
        return []
    matched = match_new_calls(con, settings)
    new = sum(n for status, n in matched.items() if status != "pool_exhausted")
    if new:
        progress(f"matched {new:,} new calls to number leases: "
                 + ", ".join(f"{status} {n:,}" for status, n in sorted(matched.items())
                             if status != "pool_exhausted"))
    unmatched = matched.get("unmatched", 0)
    return [f"{unmatched:,} calls matched no number lease: each is a touch of the person its "
            "caller number names (channel Phone)"] if unmatched else []


def order_notes(con: BaseBackend) -> list[str]:
    """Sentences for orders prepare counted once (a repeated ``order_id``) and orders without
    revenue (not purchases under a conversion that needs revenue)."""
    rejects, audit = con.table("rejects"), con.table("audit")
    repeated = int(rejects.filter(rejects.reason_code == "duplicate_order_id").count().execute())
    zero = int(audit.filter(audit.reason_code == "zero_revenue_order")
               .row_count.sum().fill_null(0).execute())
    notes = []
    if repeated:
        notes.append(f"{repeated:,} records repeated an earlier order_id: each order counts "
                     "once (rejects: duplicate_order_id)")
    if zero:
        notes.append(f"{zero:,} orders have revenue 0 or none: no purchase under a conversion "
                     "that needs revenue (audit: zero_revenue_order)")
    return notes


def deal_notes(con: BaseBackend, settings: Settings,
               conversions: Collection[str] | None = None) -> list[str]:
    """A sentence for each conversion type on deals whose deals name no one touchline knows:
    a deal converts for the account (``crm:<account_id>``) or the person (contact e-mails,
    contact ids) it names, and one that names neither, or only strangers, ends no journey.
    Said with how many, rather than a silent 0 (a CRM export of won deals loaded without
    their contacts). ``conversions``: only these conversion types (None: every one); the
    sentences `touchline run` warns with, and `touchline kpis` and `touchline report` when
    their figures are of a deal conversion."""
    from touchline.journeys.conversions import unmatched_deals
    from touchline.prepare.reference import currency_rates
    from touchline.prepare.standardise import contact_key

    specs = [spec for spec in settings.conversions if spec.deal is not None
             and (conversions is None or spec.name in conversions)]
    if not specs or not {store.DEALS.name, "identities", "accounts"} <= set(
            con.list_tables()):
        return []
    if int(con.table(store.DEALS.name).count().execute()) == 0:
        return []
    rates = currency_rates(settings.reporting_currency, settings.currency_rates_file)
    key = contact_key(con, settings)
    tables = {name: con.table(name) for name in ("deals", "identities", "accounts")}
    notes = []
    for spec in specs:
        left = unmatched_deals(tables["deals"], tables["identities"], tables["accounts"], spec,
                               statuses=settings.deal_statuses, rates=rates, contact_key=key)
        nameless = left.account_id.isnull() & left.contact_emails.isnull() & (
            left.contact_ids.isnull())
        counts = left.aggregate(n=left.count(), nameless=nameless.cast("int64").sum()
                                ).to_pyarrow().to_pylist()[0]
        n, none = int(counts["n"]), int(counts["nameless"] or 0)
        if not n:
            continue
        why = []
        if none:
            why.append(f"{none:,} name no account_id, contact_emails or contact_ids (map one "
                       "of them when importing deals: docs/ingest.md)")
        if n - none:
            why.append(f"{n - none:,} name only accounts or people not seen in events")
        notes.append(f"{n:,} {spec.deal} deals are left out of conversion {spec.name!r}: "
                     f"{'; '.join(why)}")
    return notes


def unconverted_currencies(con: BaseBackend) -> list[str]:
    """A sentence for each currency prepare found no rate for: its revenue is null, so those
    touches are no purchases (the audit has the rows)."""
    audit = con.table("audit")
    unknown = audit.filter(audit.reason_code == "unknown_currency").group_by(
        "old_value").aggregate(rows=audit.row_count.sum()).to_pandas()
    return [f"{int(r.rows):,} revenue values in currency {r.old_value!r} have no rate: they "
            "count as no revenue (add the rate to currency_rates_file)"
            for r in unknown.itertuples()]


def unknown_events(con: BaseBackend, settings: Settings) -> list[str]:
    """A sentence for each event name or deal stage a conversion type or a stage of your own
    names that the data do not have, with the nearest that exists: a typo finds nothing,
    silently."""

    from touchline.journeys.conversions import DEAL_MILESTONES

    # touches, not the touchpoints view: the names are the touches', and the view's join to
    # sessions cost as much as reading them
    tp, deals = con.table("touches"), con.table("deals")
    seen = {"event": set(tp.select("event").distinct().to_pandas().event.dropna()),
            "deal stage": {str(s).strip().lower() for s in
                           deals.select("stage").distinct().to_pandas().stage.dropna()}}
    outcomes = {"won", "lost", *DEAL_MILESTONES}
    named = [(f"conversion {c.name!r}", c.events, [c.deal] if c.deal else [])
             for c in settings.conversions]
    named += [(f"stage model {m!r}, stage {s.name!r}", s.events, [s.deal] if s.deal else [])
              for m, stages in settings.stage_models.items() for s in stages]
    out = []
    for where, events, deal in named:
        stages = [d.strip().lower() for d in deal if d.strip().lower() not in outcomes]
        for kind, names in (("event", events), ("deal stage", stages)):
            if not seen[kind]:
                continue
            for name in names:
                if name not in seen[kind]:
                    choices = sorted(seen[kind] | (outcomes if kind == "deal stage" else set()))
                    hint = did_you_mean(name, choices)
                    out.append(f"{where}: no {'touch' if kind == 'event' else 'deal'} has the "
                               f"{kind} {name!r}{hint}")
    return out


def write_credits(con: BaseBackend, settings: Settings, *, touches: ir.Table | None = None
                  ) -> tuple[int, list[str], dict[str, str], dict[str, str]]:
    """Credit every converting journey touch of every conversion type under each model of
    ``settings.attribution_models`` and store them as ``credits`` (replacing it); return the
    rows written, a sentence for each model that credits channels no converting journey
    holds (that credit stays with the converting journeys' own channels), and per conversion
    type what ``auto`` picked and why (its candidates' scores go to ``model_choices``), and
    with ``settings.markov_order = "auto"`` the Markov order picked and why, per conversion
    type and model (``markov``, ``markov_time_decay``: they take ``settings.markov_order``).

    The data-driven models (and ``auto``'s pick) also get bootstrap intervals of their channel
    credits, ``settings.bootstrap_replicates`` of them, stored as ``credit_intervals``.

    The journey touches are read from the ``journey_touches`` view, or from ``touches`` when
    given: the rows of :func:`~touchline.journeys.build.journey_rows` that
    :func:`~touchline.journeys.build.write_journeys` stored them from (``_kept`` marks
    the stored ones), as ``touchline run`` passes them."""
    from touchline.attribution.calibrated import CALIBRATED, experiment_targets
    from touchline.attribution.intervals import (
        INTERVAL_MODELS,
        Resamples,
        credit_intervals,
        resample,
    )
    from touchline.attribution.markov import MARKOV_MODELS
    from touchline.attribution.paths import journey_pathset
    from touchline.attribution.registry import MODELS, run_model
    from touchline.attribution.select import (
        AUTO_MODEL,
        FALLBACK,
        HOLDOUT_DEFAULT,
        choose_model,
    )
    from touchline.attribution.touch_credits import touch_amounts, unplaced_credit

    parts: list[pa.Table] = []
    intervals: list[pd.DataFrame] = []
    experiments = (con.table(store.EXPERIMENTS.name).to_pandas()
                   if CALIBRATED in settings.attribution_models else pd.DataFrame())
    notes: list[str] = []
    picks: dict[str, str] = {}
    orders: dict[str, str] = {}
    choices: list[pd.DataFrame] = []
    with_auto = AUTO_MODEL in settings.attribution_models
    # markov's order "auto" scores on auto's split: the time-based one where journeys have times
    time_split = with_auto or (settings.markov_order == "auto" and any(
        m in MARKOV_MODELS for m in settings.attribution_models))
    open_ages = any(MODELS[m].open_ages for m in settings.attribution_models if m in MODELS)
    journeys = con.table(store.JOURNEYS.name)
    converted = set(journeys.filter(journeys.converted).conversion.name("c").as_table()
                    .distinct().to_pyarrow().column("c").to_pylist())
    # the columns journey_pathset reads, computed once (a scratch table, as write_journeys
    # makes): the journey_touches view joins every step to its journey and session, and each
    # conversion type's path set reads it three times (time split, converting, open journeys)
    wanted = sorted(converted) or [""]
    scratch = touches is None
    if scratch:
        view = con.table(store.JOURNEY_TOUCHES.name)
        touches = engine.materialise(con, _CREDIT_TOUCHES, view.filter(
            view.conversion.isin(wanted)).select(*_PATHSET_COLUMNS))
    else:  # a scratch table already: read as it is, typed as the view types them
        types = store.JOURNEY_TOUCHES.schema
        kept = touches.filter(touches._kept & touches.conversion.isin(wanted))
        touches = kept.select(*(kept[c].cast(types[c]).name(c) for c in _PATHSET_COLUMNS))
    for spec in settings.conversions:
        if spec.name not in converted:  # no pathset of open journeys alone
            continue
        mine = touches.filter(touches.conversion == spec.name)
        paths, converting = journey_pathset(
            mine, level="channel", split_holdout=HOLDOUT_DEFAULT if time_split else None,
            open_ages=open_ages)
        n = converting.num_rows
        if not n or paths.total_conversions == 0:
            continue
        # one bootstrap draw shared by every model with intervals (the draw each would make
        # itself: same paths, replicates and seed), made when the first of them needs it
        draws: list[Resamples] = []
        names: list[str] = []
        amounts: list[tuple[np.ndarray, np.ndarray]] = []
        for model in settings.attribution_models:
            fitted, params = model, {}
            if model == AUTO_MODEL:
                choice = choose_model(paths, fallback=FALLBACK)
                credits, picks[spec.name] = choice.credits, choice.reason
                choices.append(choice_rows(spec.name, choice))
                fitted, params = choice.model, dict(choice.params)
            elif model == CALIBRATED:
                params = {"experiments": experiment_targets(experiments, paths, converting,
                                                            conversion=spec.name)}
                credits = run_model(paths, model, params)
            else:
                if model in MARKOV_MODELS:
                    params = {"order": settings.markov_order}
                credits = run_model(paths, model, params)
                if "order_choice" in credits.info:
                    orders[f"{spec.name} ({model})"] = credits.info["order_choice"]
            if fitted in INTERVAL_MODELS and settings.bootstrap_replicates:
                if not draws:
                    draws.append(resample(paths, replicates=settings.bootstrap_replicates,
                                          seed=settings.bootstrap_seed))
                bounds = credit_intervals(
                    paths, fitted, params, credits=credits,
                    replicates=settings.bootstrap_replicates,
                    confidence=settings.bootstrap_confidence, seed=settings.bootstrap_seed,
                    resamples=draws[0])
                intervals.append(bounds.rename(columns={paths.level: "channel"}).assign(
                    conversion=spec.name, model=model, replicates=settings.bootstrap_replicates,
                    confidence=settings.bootstrap_confidence))
            credit, value = touch_amounts(paths, credits)
            unplaced = unplaced_credit(paths, credits.conversions)
            if unplaced:
                notes.append(
                    f"{model} gives {sum(unplaced.values()):,.2f} of {spec.name}'s "
                    f"{paths.total_conversions:,.0f} conversions to channels seen only in "
                    f"journeys that did not convert ({', '.join(sorted(unplaced))}): `touchline "
                    "attribute` shows them; the stored per-touch credits keep each journey "
                    "whole on its own channels")
            names.append(model)
            amounts.append((np.asarray(credit[:n], float), np.asarray(value[:n], float)))
        # one row per touch and model, a touch's models side by side: its journey id and
        # other values repeat on consecutive rows, which DuckDB's string compression stores
        # at half the cost of one model's rows after another's (4.2M rows at 10M events)
        if not names:
            continue
        touch = np.repeat(np.arange(n), len(names))
        parts.append(pa.table({
            "journey_id": converting.column("journey_id").take(touch),
            "position": converting.column("position").take(touch),
            "conversion": pa.array([spec.name] * len(touch)),
            "model": pa.array(names * n),
            "channel": converting.column("label").take(touch),
            "touch_at": converting.column("touch_at").take(touch),
            "converted_at": converting.column("converted_at").take(touch),
            "credit": pa.array(np.column_stack([c for c, _ in amounts]).ravel()),
            "value": pa.array(np.column_stack([v for _, v in amounts]).ravel()),
        }))
    if scratch:
        engine.drop_materialised(con, _CREDIT_TOUCHES)
    schema = store.CREDITS.schema.to_pyarrow()
    data = (pa.concat_tables([p.cast(schema) for p in parts]) if parts
            else schema.empty_table())
    engine.load_table(con, store.CREDITS.name, data)
    bounds_schema = store.CREDIT_INTERVALS.schema.to_pyarrow()
    engine.load_table(con, store.CREDIT_INTERVALS.name, pa.Table.from_pandas(
        pd.concat(intervals, ignore_index=True)[bounds_schema.names], preserve_index=False)
        .cast(bounds_schema) if intervals else bounds_schema.empty_table())
    if with_auto:
        picked = store.MODEL_CHOICES.schema.to_pyarrow()
        engine.load_table(con, store.MODEL_CHOICES.name, pa.Table.from_pandas(
            pd.concat(choices, ignore_index=True), preserve_index=False).cast(picked)
            if choices else picked.empty_table())
    return data.num_rows, notes, picks, orders


#: the scratch table of :func:`write_credits` and the journey touch columns it keeps
_CREDIT_TOUCHES = "_touchline_credit_touches"
_PATHSET_COLUMNS = ("journey_id", "position", "conversion", "converted", "converted_at", "value",
                    "touch_at", "days_before_conversion", "channel")


def choice_rows(conversion: str, choice: Choice) -> pd.DataFrame:
    """``model_choices`` rows of one conversion type: every candidate, the winner marked."""
    from touchline.attribution.select import CANDIDATES

    params = {c.label: json.dumps(dict(c.params), default=list) for c in CANDIDATES}
    params[choice.label] = json.dumps(dict(choice.params), default=list)
    scores = choice.scores
    return pd.DataFrame({
        "conversion": conversion,
        "candidate": scores.candidate,
        "model": scores.model,
        "params": scores.candidate.map(params),
        "held_out_log_loss": scores.held_out_log_loss.astype(float),
        "picked": scores.candidate == choice.label,
        "split": choice.split,
        "held_out_journeys": float(scores.attrs.get("held_out_journeys", 0.0)),
        "reason": choice.reason,
    })


def channel_credits(con: BaseBackend, conversion: str, model: str) -> pd.DataFrame:
    """Stored credits of ``conversion`` under ``model`` summed by channel, largest first."""
    c = con.table(store.CREDITS.name)
    mine = c.filter((c.conversion == conversion) & (c.model == model))
    by = mine.group_by("channel").aggregate(conversions=mine.credit.sum(),
                                            value=mine.value.sum())
    return by.order_by([by.conversions.desc(), by.channel]).to_pandas()
