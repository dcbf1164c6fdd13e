"""``touchline funnel``: the CLI door to :func:`touchline.metrics.funnels.funnel`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from touchline import engine
from touchline.config import load_settings
from touchline.errors import ConfigError, TouchlineError
from touchline.terminal import fail

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


def register(app: typer.Typer) -> None:
    """Add ``funnel`` to the touchline CLI."""

    @app.command()
    def funnel(
        steps: Annotated[list[str], typer.Argument(
            help="Steps in order: an event name, page:<regex>, stage:<name> (or "
            "stage:<model>/<name>), conversion:<type>.")],
        window: Annotated[str | None, typer.Option(
            help="Conversion window from step 1, e.g. 30d, 12h.")] = None,
        mode: Annotated[str, typer.Option(help="ordered, strict or any.")] = "ordered",
        by: Annotated[str | None, typer.Option(
            help="Breakdown by first touch: channel, source, campaign or device.")] = None,
        unit: Annotated[str, typer.Option(help="person or account.")] = "person",
        database: Annotated[str | None, typer.Option(
            "--database", "-d", help="Warehouse URL (default from settings).")] = None,
    ) -> None:
        """Units entering each step, drop-off, conversion rates and time between steps."""
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
            frame = run_funnel(con, steps, window=parse_window(window) if window else None,
                               mode=mode, by=by, unit=unit,
                               stage_model=settings.stage_model).to_pandas()
        except TouchlineError as exc:
            raise fail(exc) from None
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
