r"""Rule-based models: each touch gets a fixed share of its path's conversion.

Every rule defines a weight :math:`w_i` per touch with :math:`\sum_{i \in p} w_i = 1` for each
path :math:`p` of :math:`n` touches; credits are then :math:`C_c = \sum_p \mathrm{conv}_p
\sum_{i \in p, ch_i = c} w_i` (revenue alike). Positions are 0-based below. Position rules
state their weights per path (a base on every touch plus amounts at a few positions, see
:class:`~touchline.attribution.registry.RuleWeights`), so no rule but time decay makes a pass
over every touch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np

from touchline.attribution.paths import PathSet
from touchline.attribution.registry import (
    Credits,
    RuleWeights,
    credits_from_rule,
    credits_from_weights,
    per_path_sum,
    register,
)
from touchline.errors import ConfigError, InputError

log = logging.getLogger(__name__)

HALF_LIFE_DAYS_DEFAULT = 7.0
IGNORED_CHANNELS_DEFAULT = ("direct",)
POSITION_FIRST_DEFAULT = 0.4
POSITION_LAST_DEFAULT = 0.4
MILESTONE_SPREAD_DEFAULT = 0.1


def _one_touch(paths: PathSet, position: np.ndarray) -> RuleWeights:
    """All of each path's credit at one position."""
    return RuleWeights(at=((position, np.ones(paths.n_paths)),))


@register("first_touch")
def first_touch(paths: PathSet) -> Credits:
    r"""All credit to the touch that opened the journey: :math:`w_0 = 1`.

    One touch gets 1; two touches give 1 to the first and 0 to the second.
    """
    return credits_from_rule(paths, _one_touch(paths, np.zeros(paths.n_paths, np.int64)))


@register("last_touch")
def last_touch(paths: PathSet) -> Credits:
    r"""All credit to the touch that closed the journey: :math:`w_{n-1} = 1`.

    One touch gets 1; two touches give 0 to the first and 1 to the second.
    """
    return credits_from_rule(paths, _one_touch(paths, paths.lengths - 1))


@register("last_non_direct")
def last_non_direct(paths: PathSet, *, ignore: Iterable[str] = IGNORED_CHANNELS_DEFAULT) -> Credits:
    r"""All credit to the last touch whose label is not ignored (default: ``direct``).

    .. math:: w_j = 1,\quad j = \max\{i : ch_i \notin I\}, \text{ or } j = n - 1
              \text{ if every touch is ignored}

    A navigational direct visit after an ad click says little about why someone converted.
    Labels are matched case-insensitively. Pass e.g. every non-paid channel to get "last paid
    click". One touch gets 1; for two touches ``A > direct`` A gets 1, ``direct > direct`` the
    last direct gets 1.
    """
    ignored = {str(name).casefold() for name in ignore}
    label_ignored = np.array([str(label).casefold() in ignored for label in paths.labels], bool)
    if paths.n_paths == 0:
        return credits_from_rule(paths, _one_touch(paths, np.zeros(0, np.int64)))
    # the last kept touch's index into codes; a path with none kept gets its last touch
    starts = paths.offsets[:-1]
    candidate = np.where(label_ignored[paths.codes], -1, np.arange(len(paths.codes)))
    best = np.maximum.reduceat(candidate, starts)
    chosen = np.where(best >= starts, best - starts, paths.lengths - 1)
    return credits_from_rule(paths, _one_touch(paths, chosen), ignored=sorted(ignored))


@register("linear")
def linear(paths: PathSet, *, dedupe: bool = False) -> Credits:
    r"""Equal credit to every touch: :math:`w_i = 1/n` (so a repeated channel earns more).

    With ``dedupe=True`` each *distinct* label of the path gets :math:`1/k` (:math:`k` distinct
    labels), however often it repeats. One touch gets 1; two touches 1/2 each (``A > A`` gives A
    1 either way).
    """
    if dedupe:
        distinct = np.asarray(paths.label_presence.sum(axis=1)).ravel()
        rule = RuleWeights(base=1.0 / distinct, distinct=True)
        return credits_from_rule(paths, rule, dedupe=True)
    return credits_from_rule(paths, RuleWeights(base=1.0 / paths.lengths), dedupe=False)


@register("time_decay", needs_ages=True)
def time_decay(paths: PathSet, *, half_life_days: float = HALF_LIFE_DAYS_DEFAULT) -> Credits:
    r"""Credit halves for every ``half_life_days`` between a touch and the conversion.

    .. math:: w_i = \frac{2^{-a_i / h}}{\sum_{j \in p} 2^{-a_j / h}}

    with :math:`a_i` the age of touch :math:`i` in days at conversion and :math:`h` the
    half-life (default 7 days). Needs touch timings (a touch-level table); an aggregated path
    file has none. One touch gets 1; two touches one half-life apart get 1/3 and 2/3.
    """
    if paths.ages is None:
        raise InputError(
            "time_decay needs touch timings: pass a touch-level table (journey_id, touch_at, "
            "channel, converted, converted_at), not aggregated paths"
        )
    if not half_life_days > 0:
        raise ConfigError(f"half_life_days must be > 0, got {half_life_days!r}")
    if paths.n_paths == 0:
        return credits_from_weights(paths, np.zeros(0))
    youngest = np.minimum.reduceat(paths.ages, paths.offsets[:-1])
    # relative to the youngest touch of the path, so old journeys do not underflow to 0/0
    raw = np.exp2(-(paths.ages - youngest[paths.row]) / half_life_days)
    weights = raw / per_path_sum(paths, raw)[paths.row]
    return credits_from_weights(paths, weights, half_life_days=half_life_days)


def _by_position(
    paths: PathSet,
    first: float | np.ndarray,
    middle: float | np.ndarray,
    last: float | np.ndarray,
) -> RuleWeights:
    """``first`` on the opening touch, ``last`` on the closing one, ``middle`` on each touch
    between (scalars or per path); a one-touch path has weight 1."""
    n = paths.lengths
    base = np.where(n >= 3, middle, 0.0)
    opening = np.where(n == 1, 1.0, first - base)
    closing = np.where(n >= 2, last - base, 0.0)
    start = np.zeros(paths.n_paths, np.int64)
    return RuleWeights(base=base, at=((start, opening), (np.where(n >= 2, n - 1, -1), closing)))


def _position_weights(paths: PathSet, first: float, last: float) -> RuleWeights:
    if first < 0 or last < 0 or first + last > 1 + 1e-12:
        raise ConfigError(
            f"position weights first={first!r}, last={last!r} must be >= 0 with first + last <= 1"
        )
    ends = first + last
    pair_first, pair_last = (first / ends, last / ends) if ends > 0 else (0.5, 0.5)
    n = paths.lengths
    two = n == 2  # the middle share has nowhere to go: the ends share in proportion
    return _by_position(
        paths,
        np.where(two, pair_first, first),
        (1.0 - ends) / np.maximum(n - 2, 1),
        np.where(two, pair_last, last),
    )


@register("position_based")
def position_based(
    paths: PathSet, *, first: float = POSITION_FIRST_DEFAULT, last: float = POSITION_LAST_DEFAULT
) -> Credits:
    r"""U-shaped: favour the touches that opened and closed the journey (default 40/20/40).

    .. math:: w_0 = f,\quad w_{n-1} = l,\quad w_i = \frac{1 - f - l}{n - 2}\ (0 < i < n-1)

    One touch gets 1. Two touches share in proportion, :math:`f/(f+l)` and :math:`l/(f+l)`
    (1/2 each at the default), as the middle share has nowhere to go.
    """
    return credits_from_rule(paths, _position_weights(paths, first, last), first=first, last=last)


@register("j_shaped")
def j_shaped(paths: PathSet, *, first: float = 0.2, last: float = 0.6) -> Credits:
    r"""Position-based weighted to the close: 20 % first, 60 % last, 20 % spread between.

    Two touches get 1/4 and 3/4; one touch gets 1.
    """
    return credits_from_rule(paths, _position_weights(paths, first, last), first=first, last=last)


@register("inverse_j")
def inverse_j(paths: PathSet, *, first: float = 0.6, last: float = 0.2) -> Credits:
    r"""Position-based weighted to the opening: 60 % first, 20 % last, 20 % spread between.

    Two touches get 3/4 and 1/4; one touch gets 1.
    """
    return credits_from_rule(paths, _position_weights(paths, first, last), first=first, last=last)


def _milestone_weights(paths: PathSet, spread: float, *candidates: np.ndarray) -> RuleWeights:
    r"""Milestones share :math:`1 - s` equally, the other touches share :math:`s`.

    ``candidates`` are per-path positions (-1 or out of range: no such milestone; a position
    already taken by an earlier candidate counts once). With :math:`m` distinct milestones and
    :math:`r = n - m` other touches: :math:`(1 - s)/m` per milestone and :math:`s/r` per other
    touch; when :math:`r = 0` the milestones share everything, :math:`1/m` each.
    """
    if not 0 <= spread <= 1:
        raise ConfigError(f"spread must be between 0 and 1, got {spread!r}")
    n = paths.lengths
    positions: list[np.ndarray] = []
    m = np.zeros(paths.n_paths)
    for at in candidates:
        valid = (at >= 0) & (at < n)
        for taken in positions:
            valid &= at != taken
        positions.append(np.where(valid, at, -1))
        m += valid
    r = n - m
    base = np.where(r > 0, spread / np.maximum(r, 1), 0.0)
    on = np.where(r > 0, 1 - spread, 1.0) / np.maximum(m, 1)
    return RuleWeights(base=base, at=tuple((at, on - base) for at in positions))


@register("w_shaped")
def w_shaped(paths: PathSet, *, spread: float = MILESTONE_SPREAD_DEFAULT) -> Credits:
    r"""First touch, lead-creation touch and opportunity-creation touch 30 % each, 10 % spread.

    Milestones :math:`M = \{0, \ell, o\}` (distinct positions); each gets :math:`(1-s)/|M|`, the
    other touches share :math:`s` (default 0.1). A missing stage drops out of :math:`M` (first
    and opportunity 45 % each without a lead touch). A path with neither stage flagged (e.g. an
    aggregated path file) takes its last touch as the lead creator, as the conversion is the
    lead: 45 % first, 45 % last, 10 % between. One touch gets 1; two touches 1/2 each.
    """
    unflagged = (paths.lead_position < 0) & (paths.opportunity_position < 0)
    rule = _milestone_weights(
        paths,
        spread,
        np.zeros(paths.n_paths, np.int64),
        paths.lead_position,
        paths.opportunity_position,
        np.where(unflagged, paths.lengths - 1, -1),
    )
    return credits_from_rule(paths, rule, spread=spread)


@register("full_path")
def full_path(paths: PathSet, *, spread: float = MILESTONE_SPREAD_DEFAULT) -> Credits:
    r"""W-shaped plus the closing touch: 22.5 % each to first, lead, opportunity and last touch.

    Milestones :math:`M = \{0, \ell, o, n-1\}` (distinct positions) share :math:`1 - s`, the
    others :math:`s` (default 0.1); missing stages drop out, so unflagged paths get 45 % first,
    45 % last, 10 % between. One touch gets 1; two touches 1/2 each.
    """
    rule = _milestone_weights(
        paths,
        spread,
        np.zeros(paths.n_paths, np.int64),
        paths.lead_position,
        paths.opportunity_position,
        paths.lengths - 1,
    )
    return credits_from_rule(paths, rule, spread=spread)


@register("custom")
def custom(
    paths: PathSet,
    *,
    first: float = 1.0,
    middle: float = 1.0,
    last: float = 1.0,
    channel_weights: Mapping[str, float] | None = None,
) -> Credits:
    r"""User weights by position and/or by label, normalised per path.

    .. math:: w_i = \frac{\pi(i)\,\gamma(ch_i)}{\sum_{j \in p} \pi(j)\,\gamma(ch_j)}

    :math:`\pi` is ``first`` for the opening touch, ``last`` for the closing one and ``middle``
    for each touch between (a single touch has :math:`\pi = 1`); :math:`\gamma` comes from
    ``channel_weights`` (labels not listed: 1). A path whose weights are all zero is split
    equally. Defaults give linear. Two touches get :math:`f\gamma_a / (f\gamma_a + l\gamma_b)`.
    """
    weights_given = {"first": first, "middle": middle, "last": last, **dict(channel_weights or {})}
    negative = {k: v for k, v in weights_given.items() if v < 0}
    if negative:
        raise ConfigError(f"custom weights must be >= 0; got {negative}")
    gamma = np.ones(paths.n_labels)
    known = {label: i for i, label in enumerate(paths.labels)}
    for label, weight in (channel_weights or {}).items():
        if label in known:
            gamma[known[label]] = weight
        else:
            log.info("custom: channel weight for %r matches no %s", label, paths.level)
    raw = _by_position(paths, first, middle, last)  # π, before the channel weights
    # Σ_i π(i) γ(c_i) per path, from per-path arrays: base · (M γ) plus the two ends
    total = raw.base * (paths.label_counts @ gamma)
    starts = paths.offsets[:-1]
    for at, amount in raw.at:
        valid = at >= 0
        total[valid] += amount[valid] * gamma[paths.codes[starts[valid] + at[valid]]]
    inverse = np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), 0.0)
    # a path whose weights are all zero is split equally
    equal = RuleWeights(base=np.where(total > 0, 0.0, 1.0 / paths.lengths))
    rule = RuleWeights(
        base=raw.base * inverse,
        at=tuple((at, amount * inverse) for at, amount in raw.at),
        label_scale=gamma,
        extra=equal if (total <= 0).any() else None,
    )
    return credits_from_rule(paths, rule)
