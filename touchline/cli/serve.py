"""``touchline report``, ``touchline dashboard`` and ``touchline users``: the CLI doors to
:mod:`touchline.serve`. Only this module (and ``touchline.cli``) prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from touchline.errors import ConfigError, TouchlineError, did_you_mean
from touchline.serve import HOST_DEFAULT, PORT_DEFAULT
from touchline.terminal import fail, step_bar, warn

console = Console()
err_console = Console(stderr=True)

TruthOption = Annotated[list[Path] | None, typer.Option(
    "--truth", help="Ground truth (a simulator truth.json; repeat for more) to rank the models "
    "against.")]
DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]


def _deals_left_out(con: object, settings: object, conversion: str | None,
                    unit: str | None) -> list[str]:
    """The warnings of :func:`touchline.pipeline.deal_notes` for the conversion the report
    shows (``conversion``, or the one with the most value), as `touchline run` gives them:
    none unless it is a deal conversion that left won deals out."""
    from touchline.pipeline import deal_notes
    from touchline.serve.figures import resolve_conversion

    try:
        shown = resolve_conversion(con, conversion, unit)  # type: ignore[arg-type]
    except TouchlineError:  # no converting journeys: the charts say what to run
        return []
    return deal_notes(con, settings, conversions=[shown])  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add the serve commands to the ``touchline`` app."""

    @app.command()
    def report(
        out: Annotated[Path | None, typer.Option(
            help="The HTML file to write (report.html), or with --format png the folder for "
                 "the charts (report-charts).")] = None,
        output_format: Annotated[str, typer.Option(
            "--format", help="html: one self-contained file; png: one image per chart "
                             "(slides), drawn by Chromium.")] = "html",
        since: Annotated[str | None, typer.Option(
            help="First day (YYYY-MM-DD, inclusive).")] = None,
        until: Annotated[str | None, typer.Option(
            help="Last day (YYYY-MM-DD, exclusive).")] = None,
        conversion: Annotated[str | None, typer.Option(
            help="Conversion type (default: the one with the most value).")] = None,
        model: Annotated[str | None, typer.Option(
            help="Attribution model of the channel charts (default: settings).")] = None,
        stage_model: Annotated[str | None, typer.Option(
            "--stage-model", help="Stage model of the stage timeline, funnel and stage KPIs "
            "(lifecycle, funnel, hourglass, b2b or your own; default: settings).")] = None,
        truth: TruthOption = None,
        unit: Annotated[str | None, typer.Option(
            help="B2B or B2C: account or person journeys (default: both).")] = None,
        device: Annotated[str | None, typer.Option(
            help="desktop, mobile, tablet or '(not set)': touches in sessions on it.")] = None,
        channel: Annotated[str | None, typer.Option(
            help="A channel (as the channel chart names it): its touches.")] = None,
        campaign: Annotated[str | None, typer.Option(
            help="A campaign (utm_campaign): its touches.")] = None,
        database: DatabaseOption = None,
    ) -> None:
        """Write one self-contained HTML report (charts, numbers, plotly.js inlined): it
        opens in any browser, offline."""
        from touchline import engine
        from touchline.config import load_settings
        from touchline.formatting import parse_day
        from touchline.serve.figures import Filters, check_filters, filters_given
        from touchline.serve.report import check_named, check_ready, write_pngs, write_report

        try:
            if output_format not in ("html", "png"):
                raise ConfigError(f"--format {output_format!r}: choose html or png")
            settings = load_settings(**({"database_url": database} if database else {}))
            check_filters(unit=unit, device=device)
            if stage_model is not None and stage_model not in (
                    known := settings.all_stage_models()):
                raise ConfigError(f"--stage-model {stage_model!r}"
                                  f"{did_you_mean(stage_model, known)}: choose from "
                                  f"{', '.join(known)}")
            filters = Filters(since=parse_day(since, "--since"), until=parse_day(until, "--until"),
                              conversion=conversion, model=model or settings.default_model,
                              stage_model=stage_model or settings.stage_model,
                              truth=tuple(truth or ()),
                              unit=unit, device=device, channel=channel, campaign=campaign)
            with engine.connected(settings=settings) as con, step_bar("report") as tell:
                check_ready(con, settings.database_url)
                check_named(con, conversion=conversion, model=model)
                left_out = _deals_left_out(con, settings, conversion, unit)
                given = filters_given(filters, Filters(model=settings.default_model,
                                                       stage_model=settings.stage_model))
                if output_format == "png":
                    result = write_pngs(con, out or Path("report-charts"), filters,
                                        chromium=settings.chromium_path, progress=tell,
                                        given=given)
                else:
                    result = write_report(con, out or Path("report.html"), filters,
                                          database=settings.database_url, progress=tell,
                                          given=given)
        except TouchlineError as exc:
            raise fail(exc) from None
        for note in left_out:
            warn(note)
        for name, why in result.skipped.items():
            err_console.print(f"[yellow]{name}:[/] not drawn: {escape(why)}",
                              highlight=False)
        drawn = len(result.sections) - len(result.skipped)
        if output_format == "png":
            console.print(f"[bold]charts:[/] {drawn} PNG files in {result.path}", soft_wrap=True)
            return
        console.print(f"[bold]report:[/] {result.path} ({drawn} charts; open "
                      f"{result.path.resolve().as_uri()} in a browser, no network needed)",
                      soft_wrap=True)  # a path broken over two lines cannot be copied

    @app.command()
    def dashboard(
        host: Annotated[str, typer.Option(
            help="Address to listen on (127.0.0.1: this machine only).")] = HOST_DEFAULT,
        port: Annotated[int, typer.Option(help="Port (its own: the collector keeps its).")
                        ] = PORT_DEFAULT,
        session_hours: Annotated[float, typer.Option(
            help="Hours a login lasts.")] = 8.0,
        truth: TruthOption = None,
        sessions_file: Annotated[Path | None, typer.Option(
            help="Where logins are kept across restarts (default: next to the DuckDB file; "
            "in memory for Spark).")] = None,
        database: DatabaseOption = None,
    ) -> None:
        """Serve the dashboard (login with `touchline users create`, or a read key)."""
        import gc

        import uvicorn

        from touchline.config import load_settings
        from touchline.serve.app import create_app

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            app_ = create_app(settings, session_seconds=int(session_hours * 3600),
                              truth=truth or (), sessions_file=sessions_file)
        except TouchlineError as exc:
            raise fail(exc) from None
        # what the server imported and warmed lives as long as it does: frozen out of the
        # collector's sight, a page's full collection walks the page's own objects, not the
        # ~200,000 of the imports (0.14 s each, in one /kpis first hit of three on the demo)
        gc.collect()
        gc.freeze()
        console.print(f"[bold]dashboard:[/] http://{host}:{port}/ on {settings.database_url} "
                      "(Ctrl+C stops it)")
        # no access log: a person search carries an e-mail in its URL
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)

    users = typer.Typer(help="Dashboard users.", no_args_is_help=True)
    app.add_typer(users, name="users")

    @users.command("create")
    def users_create(
        name: Annotated[str, typer.Argument(help="Login name.")],
        password_stdin: Annotated[bool, typer.Option(
            "--password-stdin", help="Read the password from standard input.")] = False,
        database: DatabaseOption = None,
    ) -> None:
        """Create a dashboard user (the password is asked for, and stored as an argon2id
        hash)."""
        import sys

        from touchline import engine
        from touchline.config import load_settings
        from touchline.serve.users import create_user

        password = (sys.stdin.readline().rstrip("\n") if password_stdin else
                    typer.prompt("password", hide_input=True, confirmation_prompt=True))
        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            from touchline import store

            with engine.connected(settings=settings) as con:
                store.init(con)
                create_user(con, name, password)
        except TouchlineError as exc:
            raise fail(exc) from None
        console.print(f"user [bold]{escape(name.strip())}[/] created: log in at "
                      "`touchline dashboard`")

    @users.command("list")
    def users_list(database: DatabaseOption = None) -> None:
        """The dashboard users (never their password hashes)."""
        from rich.table import Table

        from touchline import engine
        from touchline.config import load_settings
        from touchline.serve.users import list_users

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            with engine.connected(settings=settings) as con:
                rows = list_users(con)
        except TouchlineError as exc:
            raise fail(exc) from None
        table = Table("name", "created", "disabled", title="dashboard users")
        for row in rows:
            table.add_row(str(row["name"]), str(row["created_at"]),
                          str(row["disabled_at"] or ""))
        console.print(table)
