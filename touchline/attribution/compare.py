"""``attribute`` one model, ``compare`` several side by side, with bootstrap intervals.

Both accept paths in any shape the contract allows (see :func:`as_paths`) and return tidy
pandas frames; the numbers come from the registered model functions, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from touchline.attribution.intervals import BOOTSTRAP_REPLICATES_DEFAULT, credit_intervals
from touchline.attribution.path_files import read_path_file
from touchline.attribution.paths import PathSet, paths_from_touches
from touchline.attribution.registry import MODELS, Credits, Model, lookup, run_model
from touchline.errors import ConfigError, InputError

log = logging.getLogger(__name__)


PathsLike = PathSet | pa.Table | pd.DataFrame | str | Path | Any  # Any: an Ibis table


def as_paths(
    data: PathsLike,
    *,
    level: str = "channel",
    lookback: timedelta | None = None,
    with_ages: bool = False,
) -> PathSet:
    """Whatever the caller has, as a :class:`PathSet`.

    * a :class:`PathSet`: as is;
    * an Ibis table with ``journey_id``: touch level, aggregated in its engine;
    * an Ibis table, Arrow table or pandas frame with a ``path`` list column: aggregated paths;
    * a file name: a path file (:func:`~touchline.attribution.path_files.read_path_file`).
    """
    if isinstance(data, PathSet):
        return data
    if isinstance(data, str | Path):
        return read_path_file(Path(data), level=level)
    if isinstance(data, pd.DataFrame):
        return PathSet.from_pandas(data, level=level)
    if isinstance(data, pa.Table):
        return PathSet.from_arrow(data, level=level)
    columns = getattr(data, "columns", None)
    if columns is not None and hasattr(data, "to_pyarrow"):
        if "journey_id" in columns:
            return paths_from_touches(data, level=level, lookback=lookback, with_ages=with_ages)
        return PathSet.from_arrow(data.to_pyarrow(), level=level)
    raise InputError(
        f"cannot attribute a {type(data).__name__}: pass a PathSet, a path file, an aggregated "
        "paths table (path, conversions, value, nulls) or an Ibis touch table"
    )


def _needs_ages(models: Sequence[Model]) -> bool:
    return any(m.needs_ages for m in models)


def credits_frame(
    paths: PathSet, credits: Credits, model: str, params: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The tidy table: one row per label, ``conversions``, ``value``, then model columns."""
    frame = pd.DataFrame(
        {
            paths.level: paths.labels.astype(str),
            "conversions": credits.conversions,
            "value": credits.value,
            **{k: np.asarray(v) for k, v in credits.columns.items()},
        }
    )
    frame.attrs.update(
        model=model,
        params=dict(params or {}),
        level=paths.level,
        total_conversions=paths.total_conversions,
        total_value=paths.total_value,
        info=dict(credits.info),
    )
    return frame


def attribute(
    paths: PathsLike,
    model: str = "markov",
    *,
    level: str = "channel",
    lookback: timedelta | None = None,
    ci: float | None = None,
    replicates: int = BOOTSTRAP_REPLICATES_DEFAULT,
    seed: int = 0,
    **params: Any,
) -> pd.DataFrame:
    """Credit conversions and revenue to each label with one model.

    Returns one row per label (column named after ``level``) with ``conversions`` and
    ``value`` plus the model's own columns (``removal_effect``, ``std_error``...). With ``ci``
    (e.g. 0.9), percentile bootstrap bounds ``conversions_low``/``_high`` and
    ``value_low``/``_high`` and ``flagged`` where the interval reaches zero credit
    (:mod:`~touchline.attribution.intervals`). ``frame.attrs`` holds the model, its parameters,
    the totals and model-wide facts.

    >>> from touchline.attribution import PathSet, attribute
    >>> paths = PathSet.from_lists([["a", "b"], ["b"]], conversions=[2, 1], value=[20, 5])
    >>> attribute(paths, "linear")[["channel", "conversions", "value"]]
      channel  conversions  value
    0       a          1.0   10.0
    1       b          2.0   15.0
    """
    entry = lookup(model)
    path_set = as_paths(paths, level=level, lookback=lookback, with_ages=entry.needs_ages)
    credits = run_model(path_set, model, params)
    frame = credits_frame(path_set, credits, model, params)
    if ci is not None:
        if not 0 < ci < 1:
            raise ConfigError(f"ci must be between 0 and 1 (e.g. 0.9), got {ci!r}")
        bounds = credit_intervals(path_set, model, params, credits=credits,
                                  replicates=replicates, confidence=ci, seed=seed)
        for column in ("conversions_low", "conversions_high", "value_low", "value_high",
                       "flagged"):
            frame[column] = bounds[column].to_numpy()
        frame.attrs.update(ci=ci, replicates=replicates)
    return frame


def compare(
    paths: PathsLike,
    models: Sequence[str] | None = None,
    *,
    measure: str = "conversions",
    level: str = "channel",
    lookback: timedelta | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per label, one column per model: credited ``measure`` (conversions or value).

    ``models=None`` runs every registered model the input allows (``time_decay`` needs touch
    timings, so it is skipped, with a log line, for aggregated paths).
    """
    if measure not in ("conversions", "value"):
        raise ConfigError(f"measure must be 'conversions' or 'value', got {measure!r}")
    chosen = [lookup(name) for name in models] if models is not None else list(MODELS.values())
    path_set = as_paths(paths, level=level, lookback=lookback, with_ages=_needs_ages(chosen))
    if models is None and path_set.ages is None:
        skipped = [m.name for m in chosen if m.needs_ages]
        if skipped:
            log.info("compare: skipping %s (needs touch timings)", ", ".join(skipped))
        chosen = [m for m in chosen if not m.needs_ages]
    frame = pd.DataFrame({path_set.level: path_set.labels.astype(str)})
    for entry in chosen:
        credits = run_model(path_set, entry.name, (params or {}).get(entry.name))
        frame[entry.name] = getattr(credits, measure)
    frame.attrs.update(
        measure=measure,
        level=path_set.level,
        total_conversions=path_set.total_conversions,
        total_value=path_set.total_value,
    )
    return frame
