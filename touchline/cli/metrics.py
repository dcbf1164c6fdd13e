"""``touchline funnel``, ``touchline kpis`` and ``touchline clv fit``: the CLI doors to
:func:`touchline.metrics.funnels.funnel`, the KPI registry (:mod:`touchline.metrics.kpis`)
and the CLV models (:mod:`touchline.metrics.clv`).

``touchline kpis --format json`` prints::

    {"kpis": [{"kpi": ..., "stage": ..., "unit": ..., "formula": ..., "rows": [{...}]}],
     "skipped": [{"kpi": ..., "reason": ...}], "notes": [...]}

(``notes``: what the figures need said, such as spend kept under a channel name no credited
channel has.)
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from touchline.errors import (
    ConfigError,
    MissingInputError,
    ModelFitError,
    TouchlineError,
    UnknownKPIError,
    did_you_mean,
)
from touchline.formatting import parse_day, readable_number
from touchline.terminal import fail, warn

if TYPE_CHECKING:
    from touchline.config import Settings

FORMATS = ("table", "json", "csv")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``2w`` as a duration."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhmsw])\s*", text)
    if not match:
        raise ConfigError(f"--window {text!r}: expected a number and a unit, e.g. 30d, 12h, "
                          "90m, 3600s or 2w")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return ""
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _as_date(day: datetime | None) -> date | None:
    """The day a :func:`~touchline.formatting.parse_day` bound starts (KPIs and CLV count
    whole days)."""
    return None if day is None else day.date()


def _plain(value: Any) -> Any:
    """A cell as JSON has it: dates as ISO text, NaN and NaT as null, numpy as Python."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()[:10] if not isinstance(value, datetime) or (
            value.time() == datetime.min.time()) else value.isoformat()
    try:
        import pandas as pd

        if value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return readable_number(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def register(app: typer.Typer) -> None:
    """Add ``funnel``, ``kpis`` and ``clv`` to the touchline CLI."""
    clv_app = typer.Typer(help="Customer lifetime value: BG/NBD and Gamma-Gamma models.",
                          no_args_is_help=True)
    app.add_typer(clv_app, name="clv")

    @clv_app.command("fit")
    def clv_fit(
        until: Annotated[str | None, typer.Option(
            help="Last day of the calibration period (YYYY-MM-DD, inclusive); default the "
            "last purchase day.")] = None,
        unit: Annotated[str, typer.Option(
            help="Time unit of recency, age and the rate parameters: week or day.")] = "week",
        conversion: Annotated[str, typer.Option(
            help="Conversion type that counts as a purchase.")] = "purchase",
        fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
        database: Annotated[str | None, typer.Option(
            "--database", "-d", help="Warehouse URL (default from settings).")] = None,
    ) -> None:
        """Fit BG/NBD (r, alpha, a, b) and Gamma-Gamma (p, q, v) by maximum likelihood on the
        purchases in the warehouse; print the parameters, the customers and the period."""
        from touchline import engine
        from touchline.config import load_settings
        from touchline.metrics.clv import UNITS, fit

        console = Console()
        try:
            if fmt not in ("table", "json"):
                raise ConfigError(f"--format {fmt!r}: choose from table, json")
            if unit not in UNITS:
                raise ConfigError(f"--unit {unit!r}: choose from {', '.join(UNITS)}")
            last_day = _as_date(parse_day(until, "--until"))
            settings = load_settings(**({"database_url": database} if database else {}))
            con = engine.connect(settings=settings)
            fitted = fit(con, until=last_day, unit=unit, conversion=conversion)
        except TouchlineError as exc:
            raise fail(exc) from None
        result = fitted.as_dict()
        if fmt == "json":
            console.print(json.dumps(result, indent=2), markup=False, highlight=False,
                          soft_wrap=True)
            return
        table = Table("model", "parameter", "value",
                      title=f"CLV fit: {result['customers']:,} customers "
                      f"({result['repeat_customers']:,} with repeat purchases), "
                      f"{result['since']} to {result['until']}, in {unit}s")
        for name in ("r", "alpha", "a", "b"):
            table.add_row("BG/NBD", name, f"{result[name]:.4f}")
        for name in ("p", "q", "v"):
            table.add_row("Gamma-Gamma", name, f"{result[name]:.4f}")
        console.print(table)

    @app.command()
    def kpis(
        stage: Annotated[str | None, typer.Option(
            help="Only this stage's KPIs: awareness, consideration, decision, retention, "
            "advocacy (or a stage of the funnel, hourglass or b2b presets).")] = None,
        kpi: Annotated[list[str] | None, typer.Option(
            "--kpi", help="KPIs by name: repeat --kpi or separate names with commas "
            "(--kpi conversions,revenue); see --list.")] = None,
        by: Annotated[list[str] | None, typer.Option(
            help="Breakdown (repeatable): channel, source, medium, campaign, keyword, "
            "landing_page, device, query, country, or a period day|week|month|quarter.")
        ] = None,
        period: Annotated[str | None, typer.Option(
            help="Period grain: day, week, month or quarter.")] = None,
        since: Annotated[str | None, typer.Option(
            help="From this date (YYYY-MM-DD, UTC, inclusive).")] = None,
        until: Annotated[str | None, typer.Option(
            help="Before this date (exclusive).")] = None,
        model: Annotated[str | None, typer.Option(
            help="Attribution model of the credited KPIs (conversions, revenue, cpa, roas, "
            "cost_per_lead); default settings.default_model.")] = None,
        conversion: Annotated[str | None, typer.Option(
            help="Conversion type the conversion KPIs count (default: the stored one with "
            "the most value, as the report and dashboard choose).")] = None,
        fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
        stage_model: Annotated[str | None, typer.Option(
            "--stage-model", help="Group the KPIs by the stages of this stage model, in its "
            "order (lifecycle, funnel, hourglass, b2b); --stage then names one of its stages.")
        ] = None,
        list_: Annotated[bool, typer.Option(
            "--list", help="List every KPI with its stage, unit and formula.")] = False,
        database: Annotated[str | None, typer.Option(
            "--database", "-d", help="Warehouse URL (default from settings).")] = None,
    ) -> None:
        """KPIs of every journey stage (reach, engagement, conversion, cost, retention,
        NPS) from the stored tables, by period, channel, campaign…"""
        from touchline import engine, store
        from touchline.config import load_settings
        from touchline.metrics.kpis import (
            KPIS,
            check_dimensions,
            compute,
            computed_once,
            for_stage,
            for_stage_model,
            lookup,
            unmatched_spend_channels,
            unmatched_spend_note,
        )
        from touchline.pipeline import deal_notes

        console = Console()
        err = Console(stderr=True)
        try:
            if fmt not in FORMATS:
                raise ConfigError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
            def settings_() -> Settings:
                return load_settings(**({"database_url": database} if database else {}))

            # (stage of the chosen stage model, its KPIs) in the model's order
            groups = for_stage_model(stage_model, settings_()) if stage_model else []
            if stage_model and stage and stage not in (names := [g for g, _ in groups]):
                raise UnknownKPIError(
                    f"--stage {stage!r}{did_you_mean(stage, names)} is not a stage of stage "
                    f"model {stage_model!r}: choose from {', '.join(names)}")
            # --kpi a,b and --kpi a --kpi b alike
            kpi = [n.strip() for names in kpi or [] for n in names.split(",") if n.strip()]
            chosen = ([lookup(name) for name in kpi] if kpi
                      else for_stage(stage) if stage and not stage_model
                      else list(KPIS.values()))
            if kpi and stage:
                wrong = [k.name for k in chosen if stage not in (
                    [k.stages[stage_model]] if stage_model else k.stages.values())]
                if wrong:
                    raise UnknownKPIError(f"--kpi {', '.join(wrong)} not of stage {stage!r}")
            if stage_model:
                wanted = {k.name for k in chosen}
                groups = [(g, [k for k in ks if k.name in wanted]) for g, ks in groups
                          if (not stage or g == stage)
                          and (not kpi or any(k.name in wanted for k in ks))]
                chosen = [k for _, ks in groups for k in ks]
            if list_:
                listing = [{"kpi": k.name, "stage": k.stage,
                            **({"model_stage": k.stages[stage_model]} if stage_model else {}),
                            "stages": dict(k.stages), "unit": k.unit, "formula": k.formula,
                            "zero_denominator": k.zero_denominator, "tables": list(k.tables),
                            "by": list(k.dimensions)} for k in chosen]
                _print_list(console, listing, fmt, stage_model=stage_model, groups=groups)
                return
            settings = settings_()
            if not chosen:
                raise UnknownKPIError(f"no KPI belongs to stage {stage!r} of stage model "
                                      f"{stage_model!r}: `touchline kpis --list --stage-model "
                                      f"{stage_model}` shows which stages have KPIs")
            con = engine.connect(settings=settings)
            if conversion is None:
                conversion = _default_conversion(con)
            options: dict[str, Any] = dict(
                by=list(by or []), period=period, since=_as_date(parse_day(since, "--since")),
                until=_as_date(parse_day(until, "--until")),
                model=model or settings.default_model,
                conversion=conversion)
            check_dimensions(options["by"], period)  # a typo fails, whatever the KPIs
            results, skipped = [], []
            with computed_once(con):  # what several KPIs read is computed once
                for k in chosen:
                    try:
                        frame = compute(con, k.name, **options).to_pandas()
                    except (UnknownKPIError, MissingInputError, ModelFitError) as exc:
                        # a whole stage asked: a KPI that its breakdown, imports or
                        # conversion types do not allow, or whose model does not fit the data
                        # (CLV on a dozen customers), is skipped and said; so is one of
                        # several asked by name; the only KPI asked by name fails
                        if len(chosen) == 1 and kpi:
                            raise
                        skipped.append({"kpi": k.name, "reason": str(exc)})
                        continue
                    results.append((k, frame))
            if not results:
                raise ConfigError("no KPI could be computed: " + "; ".join(
                    s["reason"] for s in skipped))
            # a deal conversion's KPIs: the won deals it leaves out, as `touchline run` says
            left_out = deal_notes(con, settings, conversions=[conversion]) if any(
                "journeys" in k.tables for k, _ in results) else []
            # spend kept under a name no credited channel has: said, never silently
            unmatched = (unmatched_spend_channels(con)
                         if any("spend" in k.tables for k, _ in results) else [])
            notes = [unmatched_spend_note(unmatched)] if unmatched else []
        except TouchlineError as exc:
            raise fail(exc) from None
        for note in left_out:  # on stderr: json and csv stay clean
            warn(note)
        if fmt == "json":
            payload: dict[str, Any] = {"kpis": [
                {"kpi": k.name, "stage": k.stage,
                 **({"model_stage": k.stages[stage_model]} if stage_model else {}),
                 "unit": k.unit, "formula": k.formula,
                 "rows": [{c: _plain(v) for c, v in row.items()}
                          for row in frame.to_dict("records")]}
                for k, frame in results], "skipped": skipped, "notes": notes}
            if stage_model:
                payload["stage_model"] = stage_model
                payload["model_stages"] = _model_stages(groups)
            console.print(json.dumps(payload, indent=2), markup=False, highlight=False,
                          soft_wrap=True)
            return
        if fmt == "csv":
            import pandas as pd

            long = pd.concat([frame.assign(kpi=k.name)[["kpi", *frame.columns]]
                              .assign(**({"model_stage": k.stages[stage_model]}
                                         if stage_model else {}))
                              for k, frame in results], ignore_index=True)
            if stage_model:  # the model's stage next to the KPI's name
                long = long[["kpi", "model_stage",
                             *[c for c in long.columns if c not in ("kpi", "model_stage")]]]
            console.print(store.to_csv(long), markup=False, highlight=False, soft_wrap=True,
                          end="")
            for note in notes:
                err.print(f"note: {note}", markup=False, highlight=False)
            return
        frames = {k.name: frame for k, frame in results}
        for heading, ks in groups or [(None, [k for k, _ in results])]:
            if heading is not None:
                console.rule(f"{stage_model}: {heading}")
                if not ks:
                    console.print(f"no KPI belongs to stage {heading!r} of {stage_model}",
                                  markup=False, highlight=False)
            shown = [k for k in ks if k.name in frames]  # skipped: said on stderr below
            # one value each (no breakdown, not a table KPI): one summary table for them all
            scalars = [k for k in shown if _is_scalar(k, frames[k.name])]
            if scalars:
                summary = Table(Column("kpi", no_wrap=True),
                                Column("value", justify="right", no_wrap=True), "unit",
                                "stage", title=f"{len(scalars)} KPI{'s' * (len(scalars) > 1)}" + (
                                    f" of {stage_model}: {heading}" if heading else ""),
                                caption="formulas: touchline kpis --list")
                for k in scalars:
                    frame = frames[k.name]
                    where = k.stages[stage_model] if stage_model else k.stage
                    for label, column, unit in _summary_rows(k, list(frame.columns)):
                        summary.add_row(label, _cell(frame[column].iloc[0]) if len(frame)
                                        else "", unit, where if unit else "")
                console.print(summary)
            for k in shown:
                if k in scalars:
                    continue
                frame = frames[k.name]
                where = f"{stage_model}: {k.stages[stage_model]}" if stage_model else k.stage
                table = Table(*[str(c) for c in frame.columns],
                              title=f"{k.name} ({where}; {k.unit})", caption=k.formula)
                for row in frame.itertuples(index=False):
                    table.add_row(*[_cell(v) for v in row])
                console.print(table)
        for s in skipped:
            err.print(f"skipped {s['kpi']}: {s['reason']}", markup=False, highlight=False)
        for note in notes:
            err.print(f"note: {note}", markup=False, highlight=False)

    def _default_conversion(con: Any) -> str:
        """The conversion type the report and dashboard default to (the stored one with the
        most value: :func:`touchline.journeys.conversions.choose_conversion`); the KPI
        registry's default when no journey converts yet (the conversion KPIs then say so)."""
        from touchline.journeys.conversions import choose_conversion
        from touchline.metrics.kpis import CONVERSION_DEFAULT

        if "journeys" not in con.list_tables():
            return CONVERSION_DEFAULT
        try:
            return choose_conversion(con.table("journeys"), None)
        except ConfigError:
            return CONVERSION_DEFAULT

    @app.command()
    def funnel(
        steps: Annotated[list[str], typer.Argument(
            help="Steps in order: an event name, page:<regex>, stage:<name> (or "
            "stage:<model>/<name>), conversion:<type>.")],
        window: Annotated[str | None, typer.Option(
            help="Conversion window from step 1, e.g. 30d, 12h.")] = None,
        mode: Annotated[str | None, typer.Option(
            help="cumulative (the default when every step is a stage: a unit counts at "
            "every step up to its furthest), ordered (the default otherwise), strict or "
            "any.")] = None,
        by: Annotated[str | None, typer.Option(
            help="Breakdown by first touch: channel, source, campaign or device.")] = None,
        unit: Annotated[str, typer.Option(help="person or account.")] = "person",
        database: Annotated[str | None, typer.Option(
            "--database", "-d", help="Warehouse URL (default from settings).")] = None,
    ) -> None:
        """Units entering each step, drop-off, conversion rates and time between steps."""
        from touchline import engine
        from touchline.config import load_settings
        from touchline.metrics.funnels import default_mode, mode_line
        from touchline.metrics.funnels import funnel as run_funnel

        console = Console()
        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            if unit not in ("person", "account"):
                raise ConfigError(f"--unit {unit!r}: choose person or account")
            con = engine.connect(settings=settings)
            if "journeys" not in set(con.list_tables()):
                raise ConfigError(f"warehouse {settings.database_url} has no journeys: run "
                                  "`touchline run` first")
            mode = mode or default_mode(steps, settings.stage_model)
            frame = run_funnel(con, steps, window=parse_window(window) if window else None,
                               mode=mode, by=by, unit=unit,
                               stage_model=settings.stage_model).to_pandas()
        except TouchlineError as exc:
            raise fail(exc) from None
        if frame.empty:  # said, not an empty screen: most often a step's name is mistyped
            console.print(f"no {unit} entered the funnel's first step ({steps[0]!r}): check "
                          "the step's name against the stored events (an event name is "
                          "matched exactly) and the window")
            return
        for group, rows in frame.groupby("group", sort=True):
            table = Table("#", "step", "entered", "went on", "dropped", "from previous",
                          "from first", "time from previous: median (p25-p75, p90)",
                          title=f"funnel ({mode}{', window ' + window if window else ''})"
                          + (f": first touch {by} = {group}" if by else ""))
            for row in rows.itertuples(index=False):
                def pct(x: float | None) -> str:
                    return "" if x is None or x != x else f"{x:.1%}"

                spread = "" if row.median != row.median else (
                    f"{_duration(row.median)} ({_duration(row.p25)}-{_duration(row.p75)}, "
                    f"{_duration(row.p90)})")
                table.add_row(str(row.step_index), row.step, f"{row.entered:,}",
                              "" if row.converted != row.converted else f"{int(row.converted):,}",
                              "" if row.dropped != row.dropped else f"{int(row.dropped):,}",
                              pct(row.from_previous), pct(row.from_first), spread)
            console.print(table)
        console.print(mode_line(mode, unit), markup=False, highlight=False)


def _is_scalar(k: Any, frame: Any) -> bool:
    """A KPI that gave one headline row and no breakdown columns: a line of the summary."""
    return (not k.table and not k.per_period and len(frame) <= 1
            and set(frame.columns) <= set(k.values))


def _summary_rows(k: Any, columns: list[str]) -> list[tuple[str, str, str]]:
    """``(label, column, unit)`` of a scalar KPI in the summary: its headline value first
    (its own column, else its ``headline_value`` or median), then the values behind it,
    indented."""
    head = next((c for c in (k.name, k.headline_value, "median") if c in columns), columns[0])
    label = k.name if head == k.name or len(columns) == 1 else f"{k.name} ({head})"
    return [(label, head, k.unit)] + [(f"  {c}", c, "") for c in columns if c != head]


def _model_stages(groups: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """The chosen stage model's stages in order, each with its KPIs' names (none: [])."""
    return [{"stage": stage, "kpis": [k.name for k in ks]} for stage, ks in groups]


def _print_list(console: Console, listing: list[dict[str, Any]], fmt: str, *,
                stage_model: str | None = None,
                groups: list[tuple[str, list[Any]]] | None = None) -> None:
    from touchline import store

    if fmt == "json":
        payload: dict[str, Any] = {"kpis": listing}
        if stage_model:
            payload.update(stage_model=stage_model, model_stages=_model_stages(groups or []))
        console.print(json.dumps(payload, indent=2), markup=False, highlight=False,
                      soft_wrap=True)
        return
    if fmt == "csv":
        import pandas as pd

        frame = pd.DataFrame([{**row, "stages": "; ".join(f"{m}: {s}" for m, s in
                                                          row["stages"].items()),
                               "tables": " ".join(row["tables"]), "by": " ".join(row["by"])}
                              for row in listing])
        console.print(store.to_csv(frame), markup=False, highlight=False, soft_wrap=True,
                      end="")
        return
    if stage_model:
        rows = {row["kpi"]: row for row in listing}
        # the names whole: they are what --kpi takes (the other columns wrap)
        table = Table(f"{stage_model} stage", Column("kpi", no_wrap=True), "lifecycle stage",
                      "unit", "formula",
                      "needs", "by", title=f"{len(listing)} KPIs by the stages of "
                      f"{stage_model} (`touchline kpis --stage-model {stage_model}`)")
        for stage, ks in groups or []:
            if not ks:
                table.add_row(stage, "(none)", "", "", "", "", "")
            for k in ks:
                row = rows[k.name]
                table.add_row(stage, row["kpi"], row["stage"], row["unit"], row["formula"],
                              ", ".join(row["tables"]), ", ".join(row["by"]))
        console.print(table)
        return
    table = Table(Column("kpi", no_wrap=True), "stage", "unit", "formula", "needs", "by",
                  title=f"{len(listing)} KPIs (`touchline kpis --kpi NAME`)")
    for row in listing:
        table.add_row(row["kpi"], row["stage"], row["unit"], row["formula"],
                      ", ".join(row["tables"]), ", ".join(row["by"]))
    console.print(table)
