"""CLI commands of attribution: ``attribute`` and ``evaluate``, the contract other tools use.

Registered on the main Typer app by :func:`register`; like the rest of the CLI, only this layer
prints. ``--format json`` prints::

    {"model": ..., "params": {...}, "total_conversions": ..., "total_value": ...,
     "channels": [{"channel": ..., "conversions": ..., "value": ..., ...}]}

and with ``--model all`` each channel carries ``{"conversions": {model: ...}, "value": {...}}``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Column, Table
from rich.text import Text

from touchline.errors import ConfigError, TouchlineError, did_you_mean
from touchline.formatting import parse_day, readable_number
from touchline.terminal import fail

if TYPE_CHECKING:
    import pandas as pd

    from touchline.attribution.calibrated import Experiment
    from touchline.attribution.paths import PathSet
    from touchline.attribution.select import Choice


def _out() -> Console:
    """Standard output's console, made when a command prints: a console made at import keeps
    the width it saw then (80 in a test worker), not the ``COLUMNS`` of the command's run."""
    return Console()


err_console = Console(stderr=True)
log = logging.getLogger(__name__)

FORMATS = ("table", "json", "csv")
#: the names of :data:`touchline.attribution.registry.MODELS` (sorted), of
#: :data:`touchline.journeys.LEVELS` and :data:`touchline.attribution.paths.PATH_SEP_DEFAULT`,
#: copied: the options' help and defaults are built when the CLI starts, and importing the
#: models (pandas, Ibis) for them would slow every ``touchline --help``; a test keeps them equal
MODEL_NAMES = ("calibrated", "counterfactual", "custom", "first_touch", "full_path", "inverse_j",
               "j_shaped", "journey_counterfactual", "last_non_direct", "last_touch", "linear",
               "markov", "markov_time_decay", "ordered_shapley", "position_based", "shapley",
               "time_decay", "w_shaped")
LEVELS = ("channel", "source", "medium", "campaign", "keyword", "landing_page", "content")
PATH_SEP_DEFAULT = " > "
ALL_MODELS = "all"
#: how ``--model all`` groups models into tables, in the order a marketer reads them: who
#: gets everything, then rules that share the credit, then the models fitted to the data.
#: Every table repeats the channel column in the same row order, so a channel's line can be
#: followed from table to table; a model in no family gets a table of its own at the end.
MODEL_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("single touch", ("first_touch", "last_touch", "last_non_direct")),
    ("shared evenly or by weight", ("linear", "time_decay", "custom")),
    ("shared by position", ("position_based", "w_shaped", "full_path")),
    ("J-shaped", ("j_shaped", "inverse_j")),
    ("data-driven", ("markov", "markov_time_decay", "shapley", "ordered_shapley",
                     "counterfactual", "journey_counterfactual", "auto", "calibrated")),
)
#: characters of the channel (or campaign …) column before its text wraps onto a second line
LABEL_WIDTH_MAX = 22
#: what a table adds to its columns' text: the left border, and per column one space either
#: side and its right border (rich's default box)
_TABLE_EDGE, _COLUMN_EDGE = 1, 3
#: columns of a table written to a file with ``--out``
OUT_WIDTH = 200




def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs: JSON values (numbers, true, lists) or text; ``a,b`` is a list."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {pair!r}: expected key=value, e.g. half_life_days=3")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = [part.strip() for part in raw.split(",")] if "," in raw else raw
        params[key.strip()] = value
    return params


def _read(paths_file: Path, sep: str, level: str) -> PathSet:
    from touchline.attribution.path_files import read_path_file

    column = "path"
    if level != "channel":
        import pyarrow.parquet as pq

        if paths_file.suffix.lower() in (".parquet", ".pq"):
            names = pq.read_schema(paths_file).names
        else:
            with paths_file.open(encoding="utf-8-sig", errors="replace") as handle:
                names = [n.strip() for n in handle.readline().replace(";", ",").split(",")]
        column = next((c for c in (f"{level}_path", level) if c in names), "path")
    return read_path_file(paths_file, sep=sep, path_column=column, level=level)


def _warehouse_paths(database: str | None, level: str, since: str | None, until: str | None,
                     conversion: str | None, *, time_split: bool = False,
                     open_ages: bool = False) -> tuple[PathSet, str, list[Experiment]]:
    """The stored journeys of one conversion type (``touchline run``) as paths at ``level``,
    with the conversion type's name (default: the one with the most value) and the stored
    experiments on them (for ``calibrated``); ``time_split`` marks the latest journeys for
    ``auto``'s time-based split (and markov's ``order="auto"``); ``open_ages`` keeps the open
    journeys' touch ages (``markov_time_decay``)."""
    from touchline import engine, store
    from touchline.attribution.calibrated import experiment_targets
    from touchline.attribution.paths import journey_pathset
    from touchline.attribution.select import HOLDOUT_DEFAULT
    from touchline.config import load_settings
    from touchline.journeys import journeys_in_period
    from touchline.journeys.conversions import choose_conversion

    if level not in LEVELS:
        hint = did_you_mean(level, LEVELS)
        raise ConfigError(f"--by {level!r}{hint}: choose from {', '.join(LEVELS)}")
    settings = load_settings(**({"database_url": database} if database else {}))
    con = engine.connect(settings=settings)
    if "journey_touches" not in set(con.list_tables()):
        raise ConfigError(f"warehouse {settings.database_url} has no journeys: run "
                          "`touchline run` first (or give a path file with --paths)")
    conversion = choose_conversion(con.table("journeys"), conversion)
    touches = con.table("journey_touches")
    touches = journeys_in_period(touches.filter(touches.conversion == conversion),
                                 since=parse_day(since, "--since", time=True),
                                 until=parse_day(until, "--until", time=True))
    path_set, converting = journey_pathset(touches, level=level,
                                           split_holdout=HOLDOUT_DEFAULT if time_split else None,
                                           open_ages=open_ages)
    if not path_set.n_paths:
        raise ConfigError(f"no journeys of {conversion} in warehouse {settings.database_url}"
                          + (f" between {since or 'the start'} and {until or 'now'}"
                             if since or until else ""))
    store.init(con)  # a warehouse made before experiments existed gets the empty table
    experiments = experiment_targets(con.table(store.EXPERIMENTS.name).to_pandas(), path_set,
                                     converting, conversion=conversion, level=level)
    return path_set, conversion, experiments


def _interval_settings(model: str, ci: float | None, replicates: int | None,
                       database: str | None) -> tuple[float | None, int, int]:
    """``(ci, replicates, seed)`` of ``attribute``: the data-driven models get the settings'
    interval (as ``touchline run`` stores it) unless the options say otherwise;
    ``--replicates 0`` shows none."""
    from touchline.attribution.intervals import INTERVAL_MODELS
    from touchline.config import load_settings

    settings = load_settings(**({"database_url": database} if database else {}))
    replicates = settings.bootstrap_replicates if replicates is None else replicates
    if replicates == 0:
        return None, 2, settings.bootstrap_seed
    if ci is None and model in INTERVAL_MODELS:
        ci = settings.bootstrap_confidence
    return ci, replicates, settings.bootstrap_seed


def _flag_text(frame: pd.DataFrame) -> pd.DataFrame:
    """For the table: ``flagged`` as words, the bounds beside their estimate."""
    import numpy as np

    if "flagged" not in frame:
        return frame
    shown = frame.copy()
    shown["flagged"] = np.where(frame.flagged, "reaches 0", "")
    return shown.rename(columns={"flagged": "interval"})


def _interval_note(frame: pd.DataFrame) -> str:
    flagged = frame[frame.flagged][frame.attrs["level"]].tolist()
    confidence = frame.attrs["ci"]
    head = (f"{confidence:.0%} bootstrap intervals from {frame.attrs['replicates']} resamples "
            "of the journeys")
    if not flagged:
        return head + "; no channel's interval reaches zero credit."
    return (head + f"; the interval of {', '.join(map(str, flagged))} reaches zero credit: "
            "the data cannot tell it from none.")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def _single_json(frame: pd.DataFrame) -> dict[str, Any]:
    level = frame.attrs["level"]
    channels = [
        {("channel" if k == level else k): _clean(v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]
    return {
        "model": frame.attrs["model"],
        "params": frame.attrs["params"],
        "level": level,
        "total_conversions": _clean(frame.attrs["total_conversions"]),
        "total_value": _clean(frame.attrs["total_value"]),
        "channels": channels,
        **({"auto": frame.attrs["auto"]} if "auto" in frame.attrs else {}),
        **({"markov_order": frame.attrs["markov_order"]} if "markov_order" in frame.attrs
           else {}),
    }


def _stored_order(database: str | None) -> int | str:
    """``settings.markov_order``, the order ``touchline run`` used for the stored credits."""
    from touchline.config import load_settings

    return load_settings(**({"database_url": database} if database else {})).markov_order


def _order(text: str) -> int | str:
    """``--order``: ``auto`` or an integer (the model checks its range)."""
    from touchline.attribution.markov import ORDER_AUTO

    if text.strip().lower() == ORDER_AUTO:
        return ORDER_AUTO
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--order {text!r}: expected 1-4 or {ORDER_AUTO!r}") from None


def _auto_json(choice: Choice) -> dict[str, Any]:
    """What ``--model auto`` picked and why, with every candidate's held-out score."""
    return {
        "picked": choice.label,
        "reason": choice.reason,
        "split": choice.split,
        "candidates": [{"candidate": c, "held_out_log_loss": _clean(v)} for c, v in
                       zip(choice.scores.candidate, choice.scores.held_out_log_loss,
                           strict=True)],
    }


def _all_json(
    conversions: pd.DataFrame, value: pd.DataFrame, params: dict[str, Any]
) -> dict[str, Any]:
    level = conversions.attrs["level"]
    models = [c for c in conversions.columns if c != level]
    channels = [
        {
            "channel": label,
            "conversions": {m: _clean(conversions.at[i, m]) for m in models},
            "value": {m: _clean(value.at[i, m]) for m in models},
        }
        for i, label in enumerate(conversions[level])
    ]
    return {
        "model": ALL_MODELS,
        "params": params,
        "level": level,
        "models": models,
        "total_conversions": _clean(conversions.attrs["total_conversions"]),
        "total_value": _clean(conversions.attrs["total_value"]),
        "channels": channels,
    }


def _table(frame: pd.DataFrame, title: str, sort_by: str | None = None) -> Table:
    if sort_by:
        frame = frame.sort_values(sort_by, ascending=False, kind="stable")
    table = Table(*[str(c) for c in frame.columns], title=title)
    for row in frame.itertuples(index=False):
        table.add_row(*[readable_number(v) if isinstance(v, float) else str(v) for v in row])
    return table


def _number(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else (
        f"{value:,.1f}")


def model_tables(frame: pd.DataFrame, *, title: str, width: int, sort_by: str | None = "markov",
                 leading: Mapping[str, Sequence[Any]] | None = None) -> Group:
    """Models side by side, readable in a ``width``-column terminal: one table per family of
    :data:`MODEL_FAMILIES` (split further when a family is wider than ``width``), each with the
    label column first, then ``leading`` columns (the truth, in the demo), then its models.

    Why not one table: 14 models and a channel column need ~200 columns, and rich squeezes them
    into 80 by cutting every header and number to ``1…``. Full model keys as headers, so a
    column reads as in ``touchline.toml`` and ``--model``; numbers to one decimal, never cut.
    """
    level = frame.columns[0]
    models = list(frame.columns[1:])
    frame = frame.copy()
    for name, values in (leading or {}).items():  # row by row, sorted with the models
        frame[name] = list(values)
    if sort_by in models:
        frame = frame.sort_values(sort_by, ascending=False, kind="stable")
    labels = [str(v) for v in frame[level]]
    cells = {c: [_number(v) for v in frame[c]] for c in frame.columns[1:]}
    leading = dict(leading or {})
    wide = {c: max([len(c), *(len(v) for v in cells[c])]) + _COLUMN_EDGE for c in cells}
    label_width = min(max([len(level), *(len(v) for v in labels)]), LABEL_WIDTH_MAX)
    base = _TABLE_EDGE + label_width + _COLUMN_EDGE + sum(wide[k] for k in leading)
    named = {m for _, family in MODEL_FAMILIES for m in family}
    families = [(name, [m for m in family if m in models]) for name, family in MODEL_FAMILIES]
    families.append(("other models", [m for m in models if m not in named]))
    parts: list[RenderableType] = [Text(title, style="bold")]
    for name, members in families:
        chunks: list[list[str]] = []
        for model in members:  # a family wider than the terminal goes on in a second table
            if not chunks or base + sum(wide[m] for m in chunks[-1]) + wide[model] > width:
                chunks.append([])
            chunks[-1].append(model)
        for i, chunk in enumerate(chunks):
            table = Table(Column(level, max_width=LABEL_WIDTH_MAX, overflow="fold"),
                          *(Column(c, justify="right", no_wrap=True)
                            for c in (*leading, *chunk)),
                          title=name + (f" ({i + 1} of {len(chunks)})" if len(chunks) > 1
                                        else ""))
            for row, label in enumerate(labels):
                table.add_row(label, *(cells[c][row] for c in (*leading, *chunk)))
            parts.append(table)
    return Group(*parts)


def _emit(text: str | RenderableType, out: Path | None) -> None:
    if out is None:
        if isinstance(text, str):
            _out().print(text, markup=False, highlight=False, soft_wrap=True, end="")
        else:
            _out().print(text)
        return
    if not isinstance(text, str):
        recorder = Console(record=True, width=OUT_WIDTH, file=io.StringIO())
        recorder.print(text)
        text = recorder.export_text()
    out.write_text(text)
    err_console.print(f"wrote {out}")


def print_demo_summary(paths_file: Path, truth_file: Path) -> None:
    """For ``touchline demo``: every model side by side, then the ranking against the truth."""
    from touchline.attribution.compare import compare
    from touchline.attribution.evaluate import evaluate as evaluate_models
    from touchline.attribution.evaluate import load_truth

    path_set = _read(paths_file, PATH_SEP_DEFAULT, "channel")
    conversions = compare(path_set)
    console = _out()
    _out().print(model_tables(
        conversions, width=console.width,
        title=f"conversions credited by each model (total {path_set.total_conversions:,.6g})"))
    ranking = evaluate_models(conversions, load_truth(truth_file))
    _out().print(
        _table(
            ranking,
            f"models ranked by L1 share distance to {truth_file.name} (0 = perfect, 2 = disjoint)",
        )
    )


def register(app: typer.Typer) -> None:
    """Add ``attribute``, ``experiments import`` and ``evaluate`` to ``app``."""

    @app.command()
    def attribute(
        paths: Annotated[
            Path | None,
            typer.Option(
                "--paths",
                help="Path file: CSV (',' or ';') or Parquet with `path` and count columns. "
                "Without it, the journeys of the prepared warehouse are attributed.",
            ),
        ] = None,
        model: Annotated[
            str,
            typer.Option(
                help=f"One of {', '.join(MODEL_NAMES)}; 'all' for every model side by side; "
                "'auto' for the data-driven model that best predicts held-out journeys."
            ),
        ] = "markov",
        order: Annotated[str | None, typer.Option(
            help="Markov order: 1-4, or 'auto' for the one that best predicts held-out "
            "journeys (markov and markov_time_decay).")] = None,
        sep: Annotated[
            str, typer.Option(help="Separator between touches in `path`.")
        ] = PATH_SEP_DEFAULT,
        level: Annotated[
            str,
            typer.Option(
                help="What the touches are (channel, campaign...); "
                "reads column `<level>_path` if present."
            ),
        ] = "channel",
        fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
        out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
        param: Annotated[
            list[str] | None,
            typer.Option(help="Model parameter key=value (repeatable), e.g. half_life_days=3."),
        ] = None,
        ci: Annotated[float | None, typer.Option(
            help="Bootstrap interval, e.g. 0.9 (default for the data-driven models and auto: "
            "settings.bootstrap_confidence).")] = None,
        replicates: Annotated[int | None, typer.Option(
            help="Bootstrap replicates (default settings.bootstrap_replicates; 0: no "
            "interval).")] = None,
        by: Annotated[
            str | None,
            typer.Option(help=f"Warehouse only: credit {'|'.join(LEVELS)} (default channel)."),
        ] = None,
        conversion: Annotated[
            str | None, typer.Option(help="Warehouse only: the conversion type (default: the "
                                     "one with the most value).")
        ] = None,
        since: Annotated[
            str | None, typer.Option(help="Warehouse only: journeys ending on or after this "
                                     "date (YYYY-MM-DD, UTC).")
        ] = None,
        until: Annotated[
            str | None, typer.Option(help="Warehouse only: journeys ending before this date.")
        ] = None,
        database: Annotated[
            str | None, typer.Option("--database", "-d", help="Warehouse URL (default from "
                                     "settings).")
        ] = None,
    ) -> None:
        """Credit conversions and revenue to channels, campaigns, keywords... of the stored
        journeys (after `touchline run`), or of a path file (--paths)."""
        from touchline import store
        from touchline.attribution.calibrated import CALIBRATED
        from touchline.attribution.compare import attribute as attribute_paths
        from touchline.attribution.compare import compare
        from touchline.attribution.markov import MARKOV_MODELS, ORDER_AUTO, ORDER_DEFAULT
        from touchline.attribution.registry import MODELS, lookup
        from touchline.attribution.select import AUTO_MODEL, choose_model

        try:
            if fmt not in FORMATS:
                raise ConfigError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
            if paths is not None and (by or since or until or database or conversion):
                raise ConfigError("--by, --conversion, --since, --until and --database read the "
                                  "warehouse; "
                                  "drop them with --paths (use --level for a path file)")
            if by is not None:
                level = by
            params = parse_params(param or [])
            if model not in (ALL_MODELS, AUTO_MODEL):
                lookup(model, source="--model")
            if order is not None:
                params["order"] = _order(order)
            elif paths is None and model in MARKOV_MODELS:
                stored = _stored_order(database)  # the order `touchline run` used
                if stored != ORDER_DEFAULT:
                    params["order"] = stored
            if paths is None:
                path_set, conversion, experiments = _warehouse_paths(
                    database, level, since, until, conversion,
                    time_split=model == AUTO_MODEL or params.get("order") == ORDER_AUTO,
                    open_ages=model == ALL_MODELS or (model in MODELS and MODELS[model].open_ages))
                if model == CALIBRATED:
                    params.setdefault("experiments", experiments)
            else:
                path_set = _read(paths, sep, level)
            if model == ALL_MODELS:
                if params.keys() - {"order"}:
                    raise ConfigError("--param applies to one model; drop it with --model all")
                per_model: dict[str, dict[str, Any]] = (
                    {"markov": {"order": params["order"]}} if order is not None else {})
                if paths is None:
                    per_model[CALIBRATED] = {"experiments": experiments}
                conversions = compare(path_set, params=per_model)
                value = compare(path_set, params=per_model, measure="value")
                shown: str | RenderableType
                if fmt == "json":
                    shown = json.dumps(_all_json(conversions, value, params), indent=2) + "\n"
                elif fmt == "csv":
                    wide = conversions.merge(value, on=level, suffixes=("", "_value"))
                    shown = store.to_csv(wide)
                else:
                    shown = model_tables(
                        conversions, width=_out().width if out is None else OUT_WIDTH,
                        title=f"conversions credited by each model (total "
                        f"{path_set.total_conversions:,.6g}); {level} by markov credit")
            else:
                choice = None
                if model == AUTO_MODEL:
                    if params:
                        raise ConfigError("--param and --order apply to one model; drop them "
                                          "with --model auto (it chooses the settings)")
                    choice = choose_model(path_set)
                    params = dict(choice.params)
                fitted = choice.model if choice else model
                ci, replicates, seed = _interval_settings(fitted, ci, replicates, database)
                frame = attribute_paths(path_set, fitted, ci=ci, replicates=replicates,
                                        seed=seed, **params)
                if choice is not None:
                    frame.attrs["auto"] = _auto_json(choice)
                    err_console.print(f"auto: {choice.reason}", markup=False, highlight=False)
                info = frame.attrs.get("info", {})
                if "order_choice" in info:
                    frame.attrs["markov_order"] = {
                        "picked": info["order"], "reason": info["order_choice"],
                        "held_out_log_loss": {str(k): _clean(v)
                                              for k, v in info["order_scores"].items()}}
                    err_console.print(f"markov order auto: {info['order_choice']}",
                                      markup=False, highlight=False)
                shown_params = {k: v for k, v in params.items() if k != "experiments"}
                if "experiments" in params:
                    shown_params["experiments"] = [dataclasses.asdict(e) for e in
                                                   params["experiments"]]
                frame.attrs["params"] = shown_params
                if fmt == "json":
                    shown = json.dumps(_single_json(frame), indent=2) + "\n"
                elif fmt == "csv":
                    shown = store.to_csv(frame)
                else:
                    described = {k: v for k, v in shown_params.items() if k != "experiments"}
                    if "experiments" in shown_params:
                        described["experiments"] = len(shown_params["experiments"])
                    if "markov_order" in frame.attrs:
                        described["order"] = f"auto → {frame.attrs['markov_order']['picked']}"
                    shown = _table(
                        _flag_text(frame),
                        (f"auto → {choice.label}" if choice
                         else f"{model} {described or ''}".strip())
                        + f": {path_set.total_conversions:,.6g} conversions, "
                        f"{path_set.total_value:,.2f} value",
                        sort_by="conversions",
                    )
                    if "flagged" in frame:
                        shown = Group(shown, Text(_interval_note(frame)))
        except TouchlineError as exc:
            raise fail(exc) from None
        _emit(shown, out)

    experiments = typer.Typer(help="Incrementality experiments that calibrate the model "
                              "`calibrated` (docs/attribution.md).", no_args_is_help=True)
    app.add_typer(experiments, name="experiments")

    @experiments.command("import")
    def import_experiments(
        file: Annotated[Path, typer.Argument(help="CSV, NDJSON or Parquet: channel or "
                                             "campaign, period_start, period_end, "
                                             "incremental_conversions or lift with _low and "
                                             "_high, test_type (geo or holdout).")],
        database: Annotated[
            str | None, typer.Option("--database", "-d", help="Warehouse URL (default from "
                                     "settings).")
        ] = None,
    ) -> None:
        """Load experiment results into `experiments`; bad rows go to `rejects` with line and
        reason. Re-importing a file adds nothing twice."""
        from touchline import engine, store
        from touchline.collect.ingest import ingest_file
        from touchline.config import load_settings

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            con = engine.connect(settings=settings)
            result = ingest_file(con, file, store.EXPERIMENTS.name, settings=settings)
        except TouchlineError as exc:
            raise fail(exc) from None
        _out().print(f"{file}: {result.rows_read:,} rows read, {result.loaded:,} experiments "
                      f"loaded, {result.rejected:,} rejected, {result.duplicates:,} already "
                      "there", markup=False, highlight=False)
        for code, n in sorted(result.rejects_by_reason.items()):
            _out().print(f"  {n:,} rejected: {code} (table rejects has the line and reason)",
                          markup=False, highlight=False)
        if result.loaded or result.duplicates:
            _out().print("add `calibrated` to attribution_models (touchline.toml) for "
                          "`touchline run`, or: touchline attribute --model calibrated",
                          markup=False, highlight=False)

    @app.command()
    def evaluate(
        truth: Annotated[Path, typer.Option(help="truth.json (simulator or gen_paths.py).")],
        paths: Annotated[Path, typer.Option("--paths", help="Path file to attribute.")],
        models: Annotated[
            str | None,
            typer.Option(help="Comma-separated models (default: every model the file allows)."),
        ] = None,
        sep: Annotated[str, typer.Option(help="Separator between touches.")] = PATH_SEP_DEFAULT,
        measure: Annotated[str, typer.Option(help="conversions or value.")] = "conversions",
        fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
        out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    ) -> None:
        """Rank models by distance to the true incremental conversions (or revenue)."""
        from touchline import store
        from touchline.attribution.compare import compare
        from touchline.attribution.evaluate import evaluate as evaluate_models
        from touchline.attribution.evaluate import load_truth

        try:
            if fmt not in FORMATS:
                raise ConfigError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
            known = load_truth(truth)
            path_set = _read(paths, sep, "channel")
            chosen = [m.strip() for m in models.split(",")] if models else None
            credits = compare(path_set, chosen, measure=measure)
            ranking = evaluate_models(credits, known, measure=measure)
        except TouchlineError as exc:
            raise fail(exc) from None
        shown: str | Table
        if fmt == "json":
            records = [{k: _clean(v) for k, v in row.items()} for row in ranking.to_dict("records")]
            shown = (
                json.dumps({"truth": str(truth), "measure": measure, "ranking": records}, indent=2)
                + "\n"
            )
        elif fmt == "csv":
            shown = store.to_csv(ranking)
        else:
            shown = _table(
                ranking,
                f"models ranked by L1 share distance to {truth.name} "
                f"({measure}; 0 = perfect, 2 = disjoint)",
            )
        _emit(shown, out)
