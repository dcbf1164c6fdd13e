"""``touchline export`` and ``touchline audit exports``: the CLI doors to
:mod:`touchline.exports`. Only this module (and ``touchline.cli``) prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from touchline import engine
from touchline.config import load_settings
from touchline.errors import TouchlineError
from touchline.exports.export import DESTINATIONS, FORMATS
from touchline.terminal import fail

console = Console()
err_console = Console(stderr=True)

DESTINATION_NAMES = ", ".join(DESTINATIONS)
FORMAT_NAMES = ", ".join(f"{f.id} ({f.destination})" for f in FORMATS.values())
DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``audit exports`` to the ``touchline`` app."""

    @app.command("export")
    def export(
        destination: Annotated[str, typer.Argument(
            help=f"Ad platform: {DESTINATION_NAMES}.")],
        conversion: Annotated[str, typer.Option(
            help="Conversion type to send (settings.conversions).")],
        out: Annotated[Path, typer.Option(help="File to write (CSV or JSON by format).")],
        since: Annotated[str | None, typer.Option(
            help="Only conversions from this day on (YYYY-MM-DD); adjustments of conversions "
            "sent before are checked whatever the day.")] = None,
        model: Annotated[str | None, typer.Option(
            help="Send the value this model credits to the platform's clicks instead of the "
            "conversion's own value.")] = None,
        fmt: Annotated[str | None, typer.Option(
            "--format", help=f"Layout (default: the destination's first): {FORMAT_NAMES}.")] = None,
        platform_name: Annotated[str | None, typer.Option(
            "--as", help="The conversion action / event / goal name on the platform "
            "(default: the conversion type).")] = None,
        database: DatabaseOption = None,
    ) -> None:
        """Write the conversions not yet sent to DESTINATION (and adjustments of those sent
        whose value changed); refused ones go to `rejects` with the platform's error name.

        No network call unless settings.export_push_urls names the destination.
        """
        from touchline.exports import export_conversions
        from touchline.serve.figures import parse_day

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            start = parse_day(since, "--since")
            con = engine.connect(settings=settings)
            result = export_conversions(
                con, settings, destination=destination, conversion=conversion, out=out,
                fmt=fmt, platform_name=platform_name, model=model, since=start)
        except TouchlineError as exc:
            raise fail(exc) from None
        console.print(f"[bold]{result.destination}[/] ({result.format}): "
                      f"{result.conversions:,} conversions, {result.adjustments:,} adjustments "
                      f"written to {escape(str(result.path))}"
                      + (f" and {escape(str(result.adjustments_path))}"
                         if result.adjustments_path else "")
                      + f"; export {result.export_id}", soft_wrap=True)
        if result.rejected:
            why = Table("platform error", "conversions",
                        title=f"refused by the {result.destination} validator (see table "
                        "rejects)")
            for code, n in sorted(result.rejects_by_reason.items(), key=lambda kv: -kv[1]):
                why.add_row(code, f"{n:,}")
            console.print(why)
        if result.push_status is not None or result.push_error is not None:
            console.print(f"push: HTTP {result.push_status}")
        if result.push_error is not None:
            err_console.print(f"[red]push failed:[/] {escape(result.push_error[:500])}; "
                              "nothing was marked sent, the next export retries",
                              highlight=False)
            raise typer.Exit(code=1)

    audit_app = typer.Typer(help="Audit logs: what was sent where.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("exports")
    def audit_exports(
        destination: Annotated[str | None, typer.Option(
            help=f"Only this destination: {DESTINATION_NAMES}.")] = None,
        limit: Annotated[int, typer.Option(help="Newest exports to show.")] = 50,
        database: DatabaseOption = None,
    ) -> None:
        """List the exports, newest first: where, which format, when, how many conversions,
        adjustments and rejects, the file, and the push's answer."""
        from touchline.exports.audit import ensure_tables, list_exports

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            con = engine.connect(settings=settings)
            ensure_tables(con)
            rows = list_exports(con, destination=destination, limit=limit).to_pandas()
        except TouchlineError as exc:
            raise fail(exc) from None
        table = Table("exported at", "destination", "format", "conversion", "sent",
                      "adjusted", "rejected", "push",
                      title=f"{len(rows)} exports (files and ids: table exports)")
        for column in table.columns[:3]:
            column.no_wrap = True
        for row in rows.itertuples(index=False):
            push = "" if row.push_status != row.push_status or row.push_status is None else (
                f"HTTP {int(row.push_status)}")
            table.add_row(f"{row.exported_at:%Y-%m-%d %H:%M}", row.destination, row.format,
                          row.conversion, f"{row.conversion_count:,}",
                          f"{row.adjustment_count:,}", f"{row.rejected_count:,}", push)
        console.print(table)
