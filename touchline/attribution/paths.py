"""Paths: the unit every attribution model works on (:class:`PathSet`), built from tables.

Two inputs are accepted (the contract is spelled out in ``docs/attribution.md``):

* an **aggregated paths table**, one row per distinct path: ``path`` (an array of touch labels in
  time order), ``conversions``, ``value`` and ``nulls`` (journeys on that path that did not
  convert), optionally ``lead_position`` / ``opportunity_position`` (0-based index of the touch
  that created the lead / opportunity, for W-shaped and full-path) and ``ages`` (days from each
  touch to the conversion, for time decay);
* a **touch-level table**, one row per touch: ``journey_id``, ``touch_at``, ``channel`` (or any
  other level column), per-journey ``converted``, ``value``, ``converted_at`` and optional flags
  ``is_lead_touch`` / ``is_opportunity_touch``. :func:`aggregate_paths` turns it into the first
  shape with Ibis, identically on DuckDB and Spark.

Path files are read by :mod:`touchline.attribution.path_files`; stored journeys by
:func:`journey_pathset`. The dense maths then runs on a :class:`PathSet`: the distinct paths as
integer codes in compressed-row form (``offsets``/``codes``, like a CSR matrix), so every model
is a handful of vectorised numpy operations over all touches at once, never a Python loop over
paths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from touchline.errors import InputError, SchemaError
from touchline.journeys.paths import aggregate_paths

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pandas as pd
    from scipy import sparse

log = logging.getLogger(__name__)

PATH_SEP_DEFAULT = " > "
SECONDS_PER_DAY = 86_400.0



@dataclass(frozen=True, eq=False)
class PathSet:
    """Distinct paths as integer codes, with their outcome counts.

    Path ``i`` is ``labels[codes[offsets[i]:offsets[i + 1]]]``. ``labels`` is sorted, so the
    same data give the same codes whatever order the rows came in.

    Attributes
    ----------
    labels
        The touch labels (channels, campaigns...), sorted.
    offsets
        ``int64[n_paths + 1]``: where each path starts in ``codes``.
    codes
        ``int64[n_touches]``: index into ``labels`` of each touch, in time order.
    conversions, value, nulls
        ``float64[n_paths]``: converting journeys, their revenue, and non-converting journeys.
    lead_position, opportunity_position
        ``int64[n_paths]``: 0-based index of the lead / opportunity creating touch, -1 if none.
    ages
        ``float64[n_touches]`` or None: days from each touch to the conversion (time decay).
    later
        ``float64[n_paths]`` or None: 1 where the path's journeys ended on or after the cutoff
        of a time-based split (:func:`journey_pathset` with ``split_holdout``), else 0; ``auto``
        holds these out. None for paths without times (path files).
    level
        What the labels are: ``"channel"``, ``"campaign"``...
    """

    labels: np.ndarray
    offsets: np.ndarray
    codes: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    nulls: np.ndarray
    lead_position: np.ndarray
    opportunity_position: np.ndarray
    ages: np.ndarray | None = None
    later: np.ndarray | None = None
    level: str = "channel"
    #: results computed by other modules from the paths alone, not their counts (keys
    #: starting ``shape:``, kept by :meth:`with_counts`), e.g. the effective journeys
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_lists(
        cls,
        paths: Sequence[Sequence[str]],
        conversions: Sequence[float],
        value: Sequence[float] | None = None,
        nulls: Sequence[float] | None = None,
        **extra: Any,
    ) -> PathSet:
        """Small, readable construction for tests and examples.

        >>> ps = PathSet.from_lists([["a", "b"], ["b"]], conversions=[1, 2], nulls=[0, 5])
        >>> ps.n_paths, list(ps.labels), ps.total_conversions
        (2, ['a', 'b'], 3.0)
        """
        array = pa.array([list(p) for p in paths], type=pa.list_(pa.string()))
        n = len(paths)
        table = pa.table(
            {
                "path": array,
                "conversions": pa.array(np.asarray(conversions, float)),
                "value": pa.array(np.zeros(n) if value is None else np.asarray(value, float)),
                "nulls": pa.array(np.zeros(n) if nulls is None else np.asarray(nulls, float)),
            }
        )
        for name, values in extra.items():
            table = table.append_column(name, pa.array(values))
        return cls.from_arrow(table)

    @classmethod
    def from_arrow(
        cls, table: pa.Table, *, level: str = "channel", source: str = "paths"
    ) -> PathSet:
        """From an aggregated paths table (Arrow): ``path`` list column plus counts."""
        if "path" not in table.column_names:
            raise SchemaError(
                f"{source}: no column 'path' (columns: {', '.join(table.column_names)})"
            )
        path = table.column("path").combine_chunks()
        if not pa.types.is_list(path.type) and not pa.types.is_large_list(path.type):
            raise SchemaError(f"{source}: column 'path' must be a list of labels, not {path.type}")
        n = len(path)
        if path.null_count:
            bad = int(np.flatnonzero(path.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{source}: row {bad + 1}: empty path")
        lengths = pc.list_value_length(path).to_numpy(zero_copy_only=False).astype(np.int64)
        if n and lengths.min() == 0:
            bad = int(np.flatnonzero(lengths == 0)[0])
            raise InputError(f"{source}: row {bad + 1}: empty path")
        flat = pc.list_flatten(path)
        if flat.null_count:
            row = np.repeat(np.arange(n), lengths)
            bad = int(row[np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]])
            raise InputError(f"{source}: row {bad + 1}: a touch has no {level}")
        encoded = pc.dictionary_encode(flat.cast(pa.string()))
        raw_labels = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        order = np.argsort(raw_labels, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes = rank[encoded.indices.to_numpy(zero_copy_only=False)].astype(np.int64)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])

        def counts(name: str, default: float) -> np.ndarray:
            if name not in table.column_names:
                return np.full(n, default, float)
            column = table.column(name).combine_chunks().cast(pa.float64())
            return column.fill_null(default).to_numpy(zero_copy_only=False).astype(float)

        ages = None
        if "ages" in table.column_names:
            ages = (
                pc.list_flatten(table.column("ages").combine_chunks())
                .to_numpy(zero_copy_only=False)
                .astype(float)
            )
        paths = cls(
            labels=raw_labels[order],
            offsets=offsets,
            codes=codes,
            conversions=counts("conversions", 0.0),
            value=counts("value", 0.0),
            nulls=counts("nulls", 0.0),
            lead_position=counts("lead_position", -1).astype(np.int64),
            opportunity_position=counts("opportunity_position", -1).astype(np.int64),
            ages=ages,
            later=(counts("later", 0.0) if "later" in table.column_names else None),
            level=level,
        )
        paths.validate(source)
        return paths

    @classmethod
    def from_pandas(cls, frame: pd.DataFrame, *, level: str = "channel") -> PathSet:
        """From a pandas frame with a ``path`` column of lists."""
        return cls.from_arrow(pa.Table.from_pandas(frame, preserve_index=False), level=level)

    def validate(self, source: str = "paths") -> None:
        """Reject counts no journey could produce: negative or not finite."""
        for name in ("conversions", "value", "nulls"):
            values = getattr(self, name)
            bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
            if len(bad):
                raise InputError(
                    f"{source}: row {bad[0] + 1}: {name} is {float(values[bad[0]])!r}; "
                    "counts must be finite and >= 0"
                )

    def with_counts(self, conversions: np.ndarray, value: np.ndarray, nulls: np.ndarray) -> PathSet:
        """The same paths with other outcome counts (bootstrap replicates, scaling).

        Arrays that depend only on the paths (positions, lengths, channel sets) are kept.
        """
        other = replace(self, conversions=conversions, value=value, nulls=nulls, _cache={
            k: v for k, v in self._cache.items() if isinstance(k, tuple) and k[0] == "shape:"})
        for name in _SHAPE_ONLY:
            if name in self.__dict__:
                other.__dict__[name] = self.__dict__[name]
        return other

    # ---- derived arrays (computed once per PathSet) ------------------------------------------

    @property
    def n_paths(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @property
    def total_conversions(self) -> float:
        return float(self.conversions.sum())

    @property
    def total_value(self) -> float:
        return float(self.value.sum())

    @property
    def _index_type(self) -> type[np.signedinteger]:
        # per-touch index arrays are the bulk of the memory: 32 bits while they fit
        return np.int32 if len(self.codes) < 2**31 - 1 else np.int64

    @cached_property
    def lengths(self) -> np.ndarray:
        """Touches per path."""
        return np.diff(self.offsets)

    @cached_property
    def row(self) -> np.ndarray:
        """For each touch, the index of its path."""
        return np.repeat(np.arange(self.n_paths, dtype=self._index_type), self.lengths)

    @cached_property
    def label_counts(self) -> np.ndarray | sparse.csr_matrix:
        """Paths × labels: how many touches of each label a path has (dense while small)."""
        from scipy import sparse

        n, k = self.n_paths, self.n_labels
        key = self.row.astype(np.int64) * k + self.codes
        if n * k <= _DENSE_CELLS_MAX:
            return np.bincount(key, minlength=n * k).reshape(n, k).astype(float)
        pairs, counts = np.unique(key, return_counts=True)
        return sparse.csr_matrix((counts.astype(float), (pairs // k, pairs % k)), shape=(n, k))

    @property
    def label_presence(self) -> np.ndarray | sparse.csr_matrix:
        """Paths × labels: 1 where the path has the label."""
        counts = self.label_counts
        if isinstance(counts, np.ndarray):
            return (counts > 0).astype(float)
        presence = counts.copy()
        presence.data[:] = 1.0
        return presence

    @cached_property
    def channel_sets(self) -> np.ndarray:
        """Bitmask of the distinct labels of each path (``uint64``; at most 63 labels)."""
        if self.n_labels > 63:
            raise InputError(
                f"{self.n_labels} distinct {self.level} labels: channel-set models handle at "
                "most 63; attribute at a coarser level"
            )
        bits = np.left_shift(np.uint64(1), self.codes.astype(np.uint64))
        return np.bitwise_or.reduceat(bits, self.offsets[:-1]) if self.n_paths else bits[:0]

    def first_occurrence(self) -> np.ndarray:
        """Mask of touches that are the first of their label within their path."""
        key = self.row.astype(np.int64) * self.n_labels + self.codes
        _, first = np.unique(key, return_index=True)
        mask = np.zeros(len(self.codes), bool)
        mask[first] = True
        return mask

    def to_frame(self, sep: str = PATH_SEP_DEFAULT) -> pd.DataFrame:
        """For display: paths joined by ``sep`` with their counts (not for round trips)."""
        import pandas as pd

        names = self.labels[self.codes]
        bounds = zip(self.offsets[:-1], self.offsets[1:], strict=True)
        joined = [sep.join(names[a:b]) for a, b in bounds]
        return pd.DataFrame(
            {
                "path": joined,
                "conversions": self.conversions,
                "value": self.value,
                "nulls": self.nulls,
            }
        )


#: cached arrays of a PathSet that do not depend on the counts
_SHAPE_ONLY = (
    "lengths",
    "row",
    "channel_sets",
    "label_counts",
)
_DENSE_CELLS_MAX = 1 << 22  # paths × labels as a dense matrix up to 4M cells (32 MB)


# ---- engine: touches → paths (built in journeys/) --------------------------------------------


def paths_from_touches(
    touches: ir.Table,
    *,
    level: str = "channel",
    lookback: timedelta | None = None,
    with_ages: bool = False,
) -> PathSet:
    """:func:`aggregate_paths` executed, then brought into numpy (a small table)."""
    table = aggregate_paths(touches, level=level, lookback=lookback, with_ages=with_ages)
    return PathSet.from_arrow(table.to_pyarrow(), level=level, source="touches")


def time_split_day(journey_touches: ir.Table, holdout: float) -> date | None:
    """The day from which about ``holdout`` of the journeys end: the cutoff of a time split.

    A journey ends at its conversion (``converted_at``) or, open, at its last touch. One small
    query: journeys counted by the day they end; the cutoff is the day whose share of journeys
    ending before it is closest to ``1 - holdout``, never the first day (training needs
    journeys). None when every journey ends on one day.
    """
    import ibis

    jt = journey_touches
    ends = jt.group_by("journey_id").aggregate(
        ended_on=ibis.coalesce(jt.converted_at.max(), jt.touch_at.max()).date())
    by_day = ends.group_by("ended_on").aggregate(journeys=ends.count()).to_pandas()
    by_day = by_day.dropna().sort_values("ended_on", ignore_index=True)
    if len(by_day) < 2:
        return None
    before = by_day.journeys.cumsum().shift(1, fill_value=0) / by_day.journeys.sum()
    best = int((before.iloc[1:] - (1 - holdout)).abs().idxmin())
    day = by_day.ended_on[best]
    return day.date() if hasattr(day, "date") else day


def journey_pathset(journey_touches: ir.Table, *, level: str = "channel",
                    split_holdout: float | None = None,
                    open_ages: bool = False) -> tuple[PathSet, pa.Table]:
    """The stored ``journey_touches`` of one conversion type as a :class:`PathSet`.

    Each converting journey is a path row of its own (conversions 1, its value, and the
    touches' ages for time decay), in ``journey_id`` order, so a model's per-touch credits map
    back to ``(journey_id, position)``; open journeys are aggregated in the engine into
    ``nulls``. Returns the path set and the converting touches (``journey_id``, ``position``,
    ``touch_at``, ``converted_at``, ``label``) aligned with the first touches of ``codes``.

    With ``split_holdout`` (e.g. 0.25), ``later`` marks the journeys that end on or after
    :func:`time_split_day` (converted on that day or after; open journeys by their last touch),
    and open journeys are counted per path on each side of it: ``auto`` trains on the earlier
    journeys and scores on the later ones.

    Open journeys carry ages 0 (no model reads them) unless ``open_ages``: then their touches'
    days before the journey's end (its last touch) are kept, and open journeys with the same
    path but other timings stay apart (``markov_time_decay`` weights their transitions too).
    """
    import ibis

    jt = journey_touches
    cutoff = time_split_day(jt, split_holdout) if split_holdout is not None else None
    converting = jt.filter(jt.converted).select(
        "journey_id", "position", "touch_at", "converted_at", label=jt[level].cast("string"),
        age=jt.days_before_conversion, value=jt.value.cast("float64"),
    ).order_by(["journey_id", "position"]).to_pyarrow()
    # open journeys: their stored positions already order them (time, channel, session), so
    # one ordered collect per journey and a count per distinct path, no window
    o = jt.filter(~jt.converted & jt[level].notnull()).select(
        "journey_id", "position", "touch_at", label=jt[level].cast("string"),
        **({"age": jt.days_before_conversion.cast("float64")} if open_ages else {}))
    ages = ({"ages": ibis.struct({"pos": o.position, "v": o.age}).collect().sort().map(
        lambda pair: pair.v)} if open_ages else {})
    per_journey = o.group_by("journey_id").aggregate(
        path=ibis.struct({"pos": o.position, "v": o.label}).collect().sort().map(
            lambda pair: pair.v),
        later=(o.touch_at.max().date() >= ibis.literal(cutoff)).cast("float64")
        if cutoff is not None else ibis.literal(0.0), **ages)
    keys = ["path", "later", *ages]
    opened = per_journey.group_by(keys).aggregate(
        nulls=per_journey.count()).order_by(keys).to_pyarrow()
    n = converting.num_rows
    ids = converting.column("journey_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if n else np.zeros(0, np.int64)
    offsets = pa.array(np.r_[starts, n].astype(np.int32))
    rows = len(starts)
    own = pa.table({
        "path": pa.ListArray.from_arrays(offsets, converting.column("label").combine_chunks()),
        "conversions": pa.array(np.ones(rows)),
        "value": pa.array(converting.column("value").to_numpy(zero_copy_only=False)[starts]
                          .astype(float) if n else np.zeros(0)),
        "nulls": pa.array(np.zeros(rows)),
        "ages": pa.ListArray.from_arrays(offsets, converting.column("age").combine_chunks()
                                         .cast(pa.float64())),
        "later": pa.array(_on_or_after(converting.column("converted_at"), cutoff)[starts]
                          if n else np.zeros(0)),
    })
    lengths = pc.list_value_length(opened.column("path")).to_numpy(zero_copy_only=False)
    open_age_lists = (
        opened.column("ages").cast(pa.list_(pa.float64())) if open_ages else
        pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32)),
                                 pa.array(np.zeros(int(lengths.sum())))))
    aggregated = pa.table({
        "path": opened.column("path").cast(pa.list_(pa.string())),
        "conversions": pa.array(np.zeros(opened.num_rows)),
        "value": pa.array(np.zeros(opened.num_rows)),
        "nulls": opened.column("nulls").cast(pa.float64()),
        "ages": open_age_lists,
        "later": opened.column("later").cast(pa.float64()),
    })
    both = pa.concat_tables([own.cast(aggregated.schema), aggregated])
    if cutoff is None:
        both = both.drop_columns(["later"])
    touches = converting.select(["journey_id", "position", "touch_at", "converted_at", "label"])
    return PathSet.from_arrow(both, level=level, source="journey_touches"), touches


def _on_or_after(times: pa.ChunkedArray, day: date | None) -> np.ndarray:
    """1.0 where a timestamp falls on ``day`` or later (0 everywhere without a day)."""
    if day is None:
        return np.zeros(len(times))
    dates = pc.cast(times, pa.timestamp("us")).cast(pa.date32())
    later = pc.greater_equal(dates, pa.scalar(day, pa.date32())).fill_null(False)
    return later.to_numpy(zero_copy_only=False).astype(float)
