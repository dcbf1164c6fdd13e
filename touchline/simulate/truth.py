"""Ground truth: what a perfect pipeline should recover from the simulated files.

Accumulated chunk by chunk and written at the end:

* ``truth.json``: counts (unique events, persons, sessions...), per-channel incremental
  conversions and revenue from the counterfactual runs of :mod:`.model`, the mess counts and
  the model's parameters;
* ``paths.csv``: each journey's true channel path up to its first conversion (or its whole
  path if it never converts), aggregated in the attribution path-file contract
  ``path, conversions, value, nulls`` (channels joined by ``' > '``; ``value`` is the first
  order's or deal's amount). In B2B mode a journey is an account: the touches of all its
  stakeholders in time order.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from touchline.simulate import channels as ch
from touchline.simulate import journeys as jr
from touchline.simulate import mess, model
from touchline.simulate.events import Rendered
from touchline.simulate.population import Population
from touchline.simulate.sources import NPS_SHARES

PATH_SEPARATOR = " > "


@dataclass
class ChannelTruth:
    """What one channel truly did, summed over journeys."""

    incremental_conversions: float = 0.0
    incremental_revenue: float = 0.0
    expected_incremental_conversions: float = 0.0
    touches: int = 0
    conversions_with_channel: int = 0
    spend: float = 0.0


@dataclass
class Truth:
    """Counts and per-channel truth, accumulated over chunks."""

    seed: int
    people: int
    b2b: bool
    counts: Counter[str] = field(default_factory=Counter)
    revenue: float = 0.0
    first_order_revenue: float = 0.0
    channels: dict[str, ChannelTruth] = field(
        default_factory=lambda: {name: ChannelTruth() for name in ch.NAMES})
    mess: Counter[str] = field(default_factory=Counter)
    paths: dict[str, list[float]] = field(default_factory=dict)
    journey_touches: list[np.ndarray] = field(default_factory=list)
    journey_days: list[np.ndarray] = field(default_factory=list)
    #: survey answers per (segment, NPS band); reviews per (platform, stars)
    nps: Counter[tuple[str, str]] = field(default_factory=Counter)
    reviews: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: customers per first-order month, and active ones per (that month, months since)
    cohorts: Counter[str] = field(default_factory=Counter)
    cohort_active: Counter[tuple[str, int]] = field(default_factory=Counter)
    repeat_customers: int = 0
    social: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the simulated seasonal dip of repeat orders (None: none) and the orders it cancelled
    seasonal_dip: model.SeasonalDip | None = None
    lapsed_repeats: int = 0

    def add(self, pop: Population, journeys: jr.Journeys, rendered: Rendered) -> None:
        """Add one chunk."""
        outcome, cf = journeys.outcome, journeys.counterfactuals
        t = journeys.touches
        c = self.counts
        c["events_written"] += rendered.written
        c["unique_events"] += rendered.human_events
        c["bot_events"] += rendered.mess["bot_events"]
        c["duplicate_events"] += (rendered.mess["duplicate_exact"]
                                  + rendered.mess["duplicate_retried"])
        c["persons"] += pop.people
        c["identified_persons"] += int((journeys.person_identified >= 0).sum())
        c["resolvable_persons"] += (int((journeys.person_identified >= 0).sum())
                                    + rendered.unlinked_devices)
        c["anonymous_ids"] += rendered.anonymous_ids
        c["sessions"] += rendered.sessions
        c["touches"] += len(t)
        c["accounts"] += pop.units if pop.b2b else 0
        if pop.b2b:
            # an account is named by a group call or by a (business) e-mail of one of its people
            rows = rendered.rows
            named = (rows.is_group | rows.email.is_valid().to_numpy(zero_copy_only=False)) & (
                rows.person >= 0)
            c["resolvable_accounts"] += len(np.unique(pop.person_unit[rows.person[named]]))
        c["journeys"] += pop.units
        c["conversions"] += int(outcome.converted.sum())
        c["orders"] += int((t.order > 0).sum())
        c["repeat_orders" if not pop.b2b else "expansion_deals"] += int(
            (outcome.repeat_values > 0).sum())
        c["calls"] += int((t.channel == ch.PHONE).sum())
        c["form_fills"] += int((t.form >= 0).sum())
        self.revenue += float(outcome.revenue.sum())
        self.lapsed_repeats += journeys.lapsed_repeats
        self.first_order_revenue += float(outcome.first_value.sum())
        self.mess.update(rendered.mess)

        converted = outcome.converted
        in_path = (t.phase == jr.PRE) | (t.phase == jr.NAVIGATIONAL)
        seen = np.zeros((pop.units, len(ch.NAMES)), bool)
        seen[t.unit[in_path], t.channel[in_path]] = True
        touches = np.bincount(t.channel, minlength=len(ch.NAMES))
        for i, name in enumerate(ch.NAMES):
            truth = self.channels[name]
            truth.incremental_conversions += float((converted & ~cf.converted[:, i]).sum())
            truth.incremental_revenue += float((outcome.revenue - cf.revenue[:, i]).sum())
            truth.expected_incremental_conversions += float(
                (outcome.probability - cf.probability[:, i]).sum())
            truth.touches += int(touches[i])
            truth.conversions_with_channel += int((converted & seen[:, i]).sum())
        self._add_paths(pop, journeys, in_path)
        pre = t.phase == jr.PRE
        self.journey_touches.append(np.bincount(t.unit[pre], minlength=pop.units))
        self.journey_days.append((journeys.last_touch_time - journeys.first_touch_time) / jr.DAY_MS)

    def add_sources(self, answers: dict[str, pa.Array], reviews: dict[str, pa.Array],
                    rendered: Rendered) -> None:
        """Add one chunk's survey answers, reviews and orders: the advocacy and retention
        figures the KPIs should recover."""
        scores = pc.cast(answers["nps_score"], pa.int64()).to_numpy(zero_copy_only=False)
        band = np.where(scores >= 9, "promoters", np.where(scores >= 7, "passives",
                                                            "detractors"))
        segment = answers["segment"].to_numpy(zero_copy_only=False)
        self.nps.update(zip(segment.tolist(), band.tolist(), strict=True))
        platform = pc.utf8_lower(pc.utf8_trim_whitespace(reviews["platform"]))
        stars = pc.cast(pc.cast(reviews["rating"], pa.float64()), pa.int64())
        self.reviews.update(zip(platform.to_pylist(), stars.to_pylist(), strict=True))
        rated = pc.drop_null(pc.cast(pc.cast(answers["review_rating"], pa.float64()),
                                     pa.int64())).to_pylist()
        self.reviews.update(("survey", k) for k in rated)
        person, when = rendered.order_person, rendered.order_time
        if not len(person):
            return
        months = when.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
        order = np.lexsort((months, person))
        person, months = person[order], months[order]
        starts = np.r_[True, person[1:] != person[:-1]]
        first = np.maximum.accumulate(np.where(starts, np.arange(len(person)), 0))
        cohort = months[first]
        since = months - cohort
        labels = cohort.astype("datetime64[M]").astype("datetime64[D]").astype(str)
        self.cohorts.update(labels[starts].tolist())
        orders_per_person = np.diff(np.r_[np.nonzero(starts)[0], len(person)])
        self.repeat_customers += int((orders_per_person >= 2).sum())
        active = np.unique(np.stack([person, since]), axis=1)
        firsts = dict(zip(person[starts].tolist(), labels[starts].tolist(), strict=True))
        self.cohort_active.update(
            (firsts[p], int(k)) for p, k in zip(active[0].tolist(), active[1].tolist(),
                                                strict=True))

    def kpis(self) -> dict[str, Any]:
        """The ``kpis`` section of truth.json: NPS by segment, reviews by platform, social by
        platform, repeat purchase and the retention cohorts."""
        def nps_of(counts: dict[str, int]) -> dict[str, Any]:
            n = sum(counts.values())
            return {**counts, "answers": n, "nps": None if not n else round(
                100 * (counts["promoters"] - counts["detractors"]) / n, 6)}

        bands = ("promoters", "passives", "detractors")
        segments = sorted({s for s, _ in self.nps})
        by_segment = {seg: nps_of({b: self.nps[(seg, b)] for b in bands}) for seg in segments}
        overall = nps_of({b: sum(self.nps[(seg, b)] for seg in segments) for b in bands})
        shares = np.array(NPS_SHARES)
        platforms = sorted({p for p, _ in self.reviews})
        reviews = {}
        for platform in platforms:
            stars = {k: self.reviews[(platform, k)] for k in range(1, 6)}
            n = sum(stars.values())
            reviews[platform] = {"reviews": n, "rating_sum": sum(k * v for k, v in stars.items()),
                                 "average_rating": round(sum(k * v for k, v in stars.items())
                                                         / n, 6),
                                 "stars": {str(k): v for k, v in stars.items()}}
        customers = sum(self.cohorts.values())
        retention: dict[str, Any] = {
            "customers": customers, "repeat_customers": self.repeat_customers,
            "repeat_purchase_rate": round(self.repeat_customers / customers, 6)
            if customers else None,
            "cohorts": [{"cohort": c, "months_since": k,
                         "customers": self.cohorts[c],
                         "active_customers": self.cohort_active[(c, k)]}
                        for c, k in sorted(self.cohort_active)]}
        if self.seasonal_dip is not None:
            retention["seasonal_dip"] = self._dip()
        return {
            "nps": {"overall": overall, "by_segment": by_segment,
                    "population_nps": round(100 * (shares[9:].sum() - shares[:7].sum()), 6)},
            "reviews": reviews,
            "social": self.social,
            "retention": retention,
        }

    def calendar_activity(self) -> dict[str, dict[str, int]]:
        """Per calendar month with an order: ``earlier_customers`` (whose first order was in
        an earlier month) and ``active`` (those of them who ordered in it), read off the
        cohorts as the ``retention`` KPI's rows give them: month = cohort + months_since."""
        return calendar_activity(
            dict(self.cohorts),
            [(c, k, n) for (c, k), n in self.cohort_active.items()])

    def _dip(self) -> dict[str, Any]:
        """The ``seasonal_dip`` section: the dip, and per year with a dip month inside the
        data, the earlier customers' active share in the dip month and its two neighbours
        and the ratio of the dip month's share to the neighbours' mean (about ``factor``)."""
        dip = self.seasonal_dip
        assert dip is not None
        activity = self.calendar_activity()
        years = []
        for month in sorted(activity):
            if int(month[5:7]) != dip.month:
                continue
            around = [_shift(month, -1), month, _shift(month, 1)]
            if not all(activity.get(m, {}).get("earlier_customers") for m in around):
                continue
            shares = [activity[m]["active"] / activity[m]["earlier_customers"] for m in around]
            neighbours = (shares[0] + shares[2]) / 2
            years.append({
                "month": month,
                "months": [{"month": m, **activity[m], "share": round(share, 6)}
                           for m, share in zip(around, shares, strict=True)],
                "ratio_to_neighbours": round(shares[1] / neighbours, 6) if neighbours else None})
        return {"month": dip.month, "factor": dip.factor,
                "lapsed_repeat_orders": self.lapsed_repeats, "years": years}

    def _add_paths(self, pop: Population, journeys: jr.Journeys, in_path: np.ndarray) -> None:
        t = journeys.touches
        rows = np.nonzero(in_path)[0]  # already sorted by unit, then time
        counts = np.bincount(t.unit[rows], minlength=pop.units)
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        names = pa.array(list(ch.NAMES), pa.string()).take(pa.array(t.channel[rows]))
        path = pc.binary_join(pa.ListArray.from_arrays(offsets, names), PATH_SEPARATOR)
        outcome = journeys.outcome
        table = pa.table({
            "path": path,
            "conversions": pa.array(outcome.converted.astype(np.int64)),
            "value": pa.array(outcome.first_value),
            "nulls": pa.array((~outcome.converted).astype(np.int64)),
        }).group_by("path").aggregate(
            [("conversions", "sum"), ("value", "sum"), ("nulls", "sum")])
        columns = table.to_pydict()
        paths = self.paths
        for p, conv, value, nulls in zip(columns["path"], columns["conversions_sum"],
                                         columns["value_sum"], columns["nulls_sum"], strict=True):
            entry = paths.get(p)
            if entry is None:
                paths[p] = [conv, value, nulls]
            else:
                entry[0] += conv
                entry[1] += value
                entry[2] += nulls

    def write_paths(self, path: Path) -> int:
        """Write ``paths.csv``, most frequent paths first; return the number of rows."""
        rows = sorted(self.paths.items(), key=lambda kv: (-(kv[1][0] + kv[1][2]), kv[0]))
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "conversions", "value", "nulls"])
            for p, (conv, value, nulls) in rows:
                writer.writerow([p, int(conv), f"{value:.2f}", int(nulls)])
        return len(rows)

    def medians(self) -> dict[str, float]:
        """Median touches and days (first to last touch) per journey before the decision."""
        touches = np.concatenate(self.journey_touches) if self.journey_touches else np.zeros(1)
        days = np.concatenate(self.journey_days) if self.journey_days else np.zeros(1)
        return {"median_touches_per_journey": float(np.median(touches)),
                "median_journey_days": round(float(np.median(days)), 2)}

    def document(self, *, files: dict[str, int], spend: dict[str, float]) -> dict[str, Any]:
        """The truth.json document."""
        counts: dict[str, float] = dict(sorted(self.counts.items()))
        counts["revenue"] = round(self.revenue, 2)
        counts["first_order_revenue"] = round(self.first_order_revenue, 2)
        counts.update(self.medians())
        channels = {}
        for name, truth in self.channels.items():
            truth.spend = spend.get(name, 0.0)
            values = asdict(truth)
            values["incremental_revenue"] = round(values["incremental_revenue"], 2)
            values["expected_incremental_conversions"] = round(
                values["expected_incremental_conversions"], 3)
            channels[name] = values
        return {
            "seed": self.seed,
            "people": self.people,
            "b2b": self.b2b,
            "counts": counts,
            "channels": channels,
            "mess": dict(sorted(self.mess.items())),
            "kpis": self.kpis(),
            "files": files,
            "model": model_description(b2b=self.b2b),
            "definitions": DEFINITIONS if self.seasonal_dip is None
            else {**DEFINITIONS, **DIP_DEFINITION},
        }


DEFINITIONS = {
    "unique_events": "distinct messageIds of non-bot events (each cross-source form copy has "
                     "its own id; unique touches = unique_events - mess.cross_source_forms)",
    "events_written": "lines/rows in the events file, duplicates and bots included",
    "persons": "real people simulated (bots excluded); identified_persons ever sent a userId",
    "anonymous_ids": "distinct anonymousIds of non-bot events (devices that sent something)",
    "resolvable_accounts": "B2B accounts named by some event: a group call or an e-mail of "
                           "one of its people (people known only by a phone call name no "
                           "account)",
    "resolvable_persons": "persons a perfect identity graph can form from the events: each "
                          "identified person once (with every device that ever sent their "
                          "userId) plus each device that never sent a userId on its own (no "
                          "event ties it to its owner, so nothing can stitch it)",
    "sessions": "web visits: a 30-minute inactivity rule per anonymousId over non-bot events "
                "by timestamp recovers them exactly (calls, webinars and CRM/forms/server "
                "events without anonymousId are not sessions)",
    "conversions": "journeys that converted (B2C: a person's first order; B2B: an account's "
                   "first won deal)",
    "revenue": "all orders (B2C) or won deals incl. expansions (B2B), in USD",
    "incremental_conversions": "conversions(all channels) - conversions(channel removed), same "
                               "random numbers (common random numbers)",
    "expected_incremental_conversions": "the same in probability: sum of p - p(without c)",
    "conversions_with_channel": "converting journeys whose path (paths.csv) contains the channel",
    "touches": "visits, calls and webinars of the channel over the whole period",
    "kpis.nps": "the survey file's answers by segment: promoters 9-10, passives 7-8, "
                "detractors 0-6, nps = 100 * (promoters - detractors) / answers; "
                "population_nps: the score the answers are drawn from",
    "kpis.reviews": "reviews.csv by platform (trimmed, lower case) plus the survey answers "
                    "with a rating (platform survey): count, sum and mean of the stars",
    "kpis.social": "social.csv by platform: followers on the first and last day (an "
                   "account's level), posts, impressions, likes, comments, shares and "
                   "engagements summed (Instagram's missing total: likes + comments + shares)",
    "kpis.retention": "every order (first and repeat) by buyer: customers per month of the "
                      "first order (the cohort), active customers per cohort and months since "
                      "(k = 0 is the cohort's size); repeat_purchase_rate = customers with >= 2 "
                      "orders / customers",
}


#: truth.json's definition of the seasonal dip section (written only with a dip: a run
#: without one writes the definitions it always wrote)
DIP_DEFINITION = {
    "kpis.retention.seasonal_dip": "only with a seasonal dip (simulate --seasonal-dip "
                                   "MONTH:FACTOR): each repeat order whose visit starts in "
                                   "calendar month `month` happens with probability `factor`; "
                                   "per year, the customers of earlier cohorts "
                                   "(earlier_customers) and those of them with an order "
                                   "(active) in the month before, the dip month and the month "
                                   "after, share = active / earlier_customers, and "
                                   "ratio_to_neighbours = the dip month's share / the mean of "
                                   "its neighbours' (about factor: the dip is visible)",
}


def _shift(month: str, by: int) -> str:
    """``YYYY-MM-01`` moved by ``by`` months."""
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}-01"


def calendar_activity(cohorts: dict[str, int], active: list[tuple[str, int, int]]
                      ) -> dict[str, dict[str, int]]:
    """Retention cohorts turned to calendar months: ``cohorts`` (first-order month
    ``YYYY-MM-01`` → customers) and ``active`` ((cohort, months since, active customers))
    give, per calendar month with a repeat order, the customers of every earlier cohort
    (``earlier_customers``) and how many of them ordered in it (``active``). A seasonal dip
    shows as a low ``active / earlier_customers`` in the same month each year, whatever the
    cohort; the retention KPI's rows give the same figures
    (tests/metrics/test_kpis_seasonal_dip.py)."""
    months: dict[str, int] = {}
    for cohort, k, n in active:
        if k >= 1:
            month = _shift(cohort, k)
            months[month] = months.get(month, 0) + int(n)
    if not months or not cohorts:
        return {}
    out, month = {}, _shift(min(cohorts), 1)
    while month <= max(months):  # every month, a month without a repeat order too
        out[month] = {"earlier_customers": sum(n for c, n in cohorts.items() if c < month),
                      "active": months.get(month, 0)}
        month = _shift(month, 1)
    return out


def model_description(*, b2b: bool) -> dict[str, Any]:
    """The causal model and its parameters, for truth.json."""
    constants = model.B2B_MODEL if b2b else model.B2C_MODEL
    timing = jr.B2B_TIMING if b2b else jr.B2C_TIMING
    params = ch.parameters(b2b=b2b)
    return {
        "unit": "account" if b2b else "person",
        "conversion": "p = sigmoid(base_logit + eta + sum_c effect_c * log(1 + N_c)), N_c = "
                      "touches of c before the decision (account-wide in B2B), eta ~ "
                      "N(0, propensity_sd^2); converted = U < p",
        "value": "round(exp(value_log_mean + value_sigma * e + sum_c value_lift_c * [N_c > 0]))",
        "repeats": "each of max_repeats repeat orders (B2B: expansion deals) happens if U_k < "
                   "sigmoid(repeat_base_logit + sum_c retention_effect_c * log(1 + M_c)), M_c = "
                   "touches after the first purchase",
        "direct": f"a consequence: each non-direct touch causes a later direct visit with "
                  f"probability {jr.FOLLOW_UP_SHARE}; removing a channel removes those visits; "
                  f"{jr.NAVIGATIONAL_SHARE:.0%} of B2C converters buy in a final direct visit",
        "counterfactual": "same people and random numbers, one channel removed at a time",
        "constants": asdict(constants),
        "timing": asdict(timing),
        "channels": {
            name: {k: float(v[i]) for k, v in params.items()}
            for i, name in enumerate(ch.NAMES)
        },
        "zero_effect_channels": [n for i, n in enumerate(ch.NAMES)
                                 if params["effect"][i] == params["value_lift"][i]
                                 == params["retention_effect"][i] == 0],
        "period_start": "2025-01-01T00:00:00Z",
        "schema_change_at": "2025-07-01T00:00:00Z",
        "bot_user_agent_pattern": mess.BOT_PATTERN,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
