"""``touchline export`` and ``touchline audit exports``: the CLI doors to
:mod:`touchline.exports`. Only this module (and ``touchline.cli``) prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from touchline.errors import ConfigError, TouchlineError
from touchline.terminal import fail

console = Console()
err_console = Console(stderr=True)

#: the keys of :data:`touchline.exports.export.DESTINATIONS` and each format of
#: :data:`~touchline.exports.export.FORMATS` with its destination, copied: the help is built
#: when the CLI starts, and importing the exports (pandas, httpx) for it would slow every
#: ``touchline --help``; a test keeps them equal
DESTINATIONS = ("google-ads", "meta", "microsoft")
FORMATS = (("google-ads-clicks-csv", "google-ads"), ("google-ads-leads-csv", "google-ads"),
           ("google-data-manager-json", "google-ads"), ("meta-capi-json", "meta"),
           ("microsoft-bulk-csv", "microsoft"), ("microsoft-api-json", "microsoft"))
DESTINATION_NAMES = ", ".join(DESTINATIONS)
FORMAT_NAMES = ", ".join(f"{format_id} ({destination})" for format_id, destination in FORMATS)
DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]


def register(app: typer.Typer) -> None:
    """Add ``export``, ``push crm`` and ``audit exports`` to the ``touchline`` app."""

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
        as_of: Annotated[str | None, typer.Option(
            "--as-of", help="The day (YYYY-MM-DD, start of day UTC) the validators take as "
            "now, for files of past data (the demo's months, a backfill): the platforms' "
            "windows count back from it. Default: now.")] = None,
        database: DatabaseOption = None,
    ) -> None:
        """Write the conversions not yet sent to DESTINATION (and adjustments of those sent
        whose value changed); refused ones go to `rejects` with the platform's error name.

        No network call unless settings.export_push_urls names the destination.
        """
        from touchline import engine
        from touchline.config import load_settings
        from touchline.exports import export_conversions
        from touchline.formatting import parse_day

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            start = parse_day(since, "--since")
            now = parse_day(as_of, "--as-of")
            con = engine.connect(settings=settings)
            result = export_conversions(
                con, settings, destination=destination, conversion=conversion, out=out,
                fmt=fmt, platform_name=platform_name, model=model, since=start, now=now)
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

    push_app = typer.Typer(help="Push records to other systems.", no_args_is_help=True)
    app.add_typer(push_app, name="push")

    @push_app.command("crm")
    def push_crm(
        since: Annotated[str | None, typer.Option(
            help="Only leads made from this day on (YYYY-MM-DD).")] = None,
        mapping: Annotated[str | None, typer.Option(
            help="Field mapping: touchline, hubspot, salesforce or a .toml / .json file "
            "(default: settings.crm_mapping).")] = None,
        out: Annotated[Path | None, typer.Option(
            help="Also write the mapped leads to this .csv or .ndjson file.")] = None,
        follow: Annotated[bool, typer.Option(
            "--follow", help="Keep pushing new leads every settings.crm_follow_interval_seconds "
            "until Ctrl-C or SIGTERM (beside `touchline serve`; `touchline run` makes the "
            "leads).")] = False,
        retry_dead_letters: Annotated[bool, typer.Option(
            "--retry-dead-letters", help="Send the leads in crm_dead_letters again.")] = False,
        max_iterations: Annotated[int | None, typer.Option(
            help="With --follow: stop after this many pushes.", min=1)] = None,
        database: DatabaseOption = None,
    ) -> None:
        """POST each lead not yet delivered to settings.crm_webhook_url, signed, with its
        idempotency key; retried with backoff, then to `crm_dead_letters`; never twice.

        Without a webhook URL, --out writes the leads to a file and nothing goes over the
        network. docs/exports.md, "Leads to the CRM".
        """
        import signal
        import threading

        from touchline import engine
        from touchline.config import load_settings
        from touchline.exports.crm_mapping import load_mapping
        from touchline.exports.crm_push import PushResult, push_leads
        from touchline.exports.crm_push import follow as follow_leads
        from touchline.formatting import parse_day

        def show(result: PushResult) -> None:
            if result.path is not None:
                console.print(f"{result.written:,} new or changed leads ({result.mapping}"
                              + (f", {result.rewritten:,} changed" if result.rewritten else "")
                              + f") written to {escape(str(result.path))} (leads written "
                              "before and unchanged are left out)", soft_wrap=True)
            if result.destination is not None and (result.pending or not follow):
                console.print(f"push {result.push_id} ({result.mapping}) to "
                              f"{escape(result.destination)}: {result.pending:,} new leads, "
                              f"{result.delivered:,} delivered"
                              + (f" ({result.resent:,} resent after an interrupted push)"
                                 if result.resent else "")
                              + f", {result.dead_letters:,} to crm_dead_letters"
                              + (" (stopped)" if result.stopped else ""), soft_wrap=True)
            if result.withheld:
                console.print(f"{result.withheld:,} leads withheld: their person's latest "
                              "consent is not granted", soft_wrap=True)

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            start = parse_day(since, "--since")
            chosen = load_mapping(mapping or settings.crm_mapping)
            if follow and out is not None:
                raise ConfigError("--follow rewrites nothing: give --out without --follow "
                                  "(a file of the leads at one moment)")
            if max_iterations is not None and not follow:
                raise ConfigError("--max-iterations applies to --follow")
            if not follow:
                con = engine.connect(settings=settings)
                try:
                    result = push_leads(con, settings, mapping=chosen, since=start, out=out,
                                        retry_dead_letters=retry_dead_letters)
                finally:
                    con.disconnect()
                show(result)
                if result.dead_letters:
                    raise typer.Exit(code=1)
                return
            if not settings.crm_webhook_url:
                raise ConfigError("--follow needs crm_webhook_url (and crm_webhook_secret) in "
                                  "the settings")
            stop = threading.Event()

            def ask_to_stop(signum: int, frame: object) -> None:
                stop.set()

            previous = {sig: signal.signal(sig, ask_to_stop)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                console.print(f"pushing new leads every {settings.crm_follow_interval_seconds:g} s"
                              " (Ctrl-C stops)")
                rounds = follow_leads(settings, stop=stop, mapping=chosen, since=start,
                                      max_iterations=max_iterations, on_push=show)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            console.print(f"stopped after {rounds:,} pushes")
        except TouchlineError as exc:
            raise fail(exc) from None

    audit_app = typer.Typer(help="Audit logs: what was sent where.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("exports")
    def audit_exports(
        destination: Annotated[str | None, typer.Option(
            help=f"Only this destination: {DESTINATION_NAMES} or crm.")] = None,
        limit: Annotated[int, typer.Option(help="Newest exports to show.")] = 50,
        database: DatabaseOption = None,
    ) -> None:
        """List the exports, newest first: where, which format, when, how many conversions,
        adjustments and rejects, the file, and the push's answer."""
        from touchline import engine
        from touchline.config import load_settings
        from touchline.exports.audit import ensure_tables, list_exports

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            con = engine.connect(settings=settings)
            ensure_tables(con)
            rows = list_exports(con, destination=destination, limit=limit).to_pandas()
        except TouchlineError as exc:
            raise fail(exc) from None
        table = Table("exported at", "destination", "format", "conversion", "sent",
                      "adjusted", "rejected", "to", "push",
                      title=f"{len(rows)} exports (files and ids: table exports)")
        for column in table.columns[:3]:
            column.no_wrap = True
        for row in rows.itertuples(index=False):
            push = "" if row.push_status != row.push_status or row.push_status is None else (
                f"HTTP {int(row.push_status)}")
            to = row.path or (row.push_url if isinstance(row.push_url, str) else "")
            table.add_row(f"{row.exported_at:%Y-%m-%d %H:%M}", row.destination, row.format,
                          row.conversion, f"{row.conversion_count:,}",
                          f"{row.adjustment_count:,}", f"{row.rejected_count:,}",
                          escape(to), push)
        console.print(table)
