"""The ``touchline`` command: a thin door over the package. Only this package prints.

Each command group has its module here (``attribution``, ``collect``, ``metrics``...),
registered on :data:`app` below. ``touchline --help`` builds every command, so a module
imports at its top only what the options need (typer, rich, touchline.errors); the engine,
Ibis, pandas and the stages are imported by the command that uses them (issue 19, start-up:
``tests/test_layout.py`` checks it).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from touchline.errors import ConfigError, TouchlineError, did_you_mean
from touchline.formatting import readable_number
from touchline.terminal import fail, progress_bar, step_bar, warn

app = typer.Typer(
    help="touchline: customer-journey tracking and multi-touch attribution.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

#: :data:`touchline.store.INGESTIBLE`, copied: the help of ``ingest --kind`` is built when the
#: CLI starts, and importing the store (Ibis) for it would slow every ``touchline --help``; a
#: test keeps them equal
INGESTIBLE = ("events", "deals", "spend", "calls", "surveys", "search_console", "social",
              "reviews", "number_leases", "experiments")
DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]




@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


@app.command()
def init(database: DatabaseOption = None) -> None:
    """Create the canonical tables in the warehouse."""
    from touchline import engine, store
    from touchline.config import load_settings

    try:
        settings = load_settings(**({"database_url": database} if database else {}))
        con = engine.connect(settings=settings)
        created = store.init(con)
    except TouchlineError as exc:
        raise fail(exc) from None
    table = Table("table", "status", title=f"warehouse {settings.database_url}")
    for name in store.TABLES:
        table.add_row(name, "created" if name in created else "exists")
    console.print(table)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="CSV, NDJSON or Parquet files (.gz too).")],
    kind: Annotated[str, typer.Option(help=f"Target table: {', '.join(INGESTIBLE)}.")],
    map_file: Annotated[
        Path | None, typer.Option("--map", help="TOML column mapping (docs/ingest.md).")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, ndjson or parquet (default: by name).")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Value of `source` for rows that do not say.")
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """Load files into a canonical table; bad rows go to `rejects` with file, line and reason.

    Re-ingesting a file (or overlapping files) adds nothing twice.
    """

    from touchline import engine, store
    from touchline.collect.ingest import ingest_file
    from touchline.collect.mapping import load_mapping
    from touchline.config import load_settings

    try:
        settings = load_settings(**({"database_url": database} if database else {}))
        if kind not in store.INGESTIBLE:
            raise ConfigError(f"--kind {kind!r}{did_you_mean(kind, store.INGESTIBLE)} is not "
                              f"one of {', '.join(store.INGESTIBLE)}")
        mapping = load_mapping(map_file, canonical={c.name for c in store.TABLES[kind].columns},
                               kind=kind)
        con = engine.connect(settings=settings)
    except TouchlineError as exc:
        raise fail(exc) from None
    failed = 0
    summary = Table("file", "read", "loaded", "rejected", "duplicates", "seconds",
                    title=f"ingest into {kind}")
    reasons: dict[str, int] = {}
    # a bar over the files (done of all), and under it the file being read with its count
    with progress_bar("{task.description}") as progress:
        files = progress.add_task(f"ingest into {kind}: files", total=len(paths))
        for path in paths:
            task = progress.add_task(f"{path.name}: reading", total=None)
            try:
                result = ingest_file(
                    con, path, kind, settings=settings, mapping=mapping, fmt=fmt, source=source,
                    progress=lambda n, t=task, name=path.name: progress.update(
                        t, description=f"{name}: {n:,} records read"),
                )
            except TouchlineError as exc:
                failed += 1
                fail(exc)
                continue
            finally:
                progress.remove_task(task)
                progress.advance(files)
            summary.add_row(str(path), f"{result.rows_read:,}", f"{result.loaded:,}",
                            f"{result.rejected:,}", f"{result.duplicates:,}",
                            f"{result.seconds:.1f}")
            for code, n in result.rejects_by_reason.items():
                reasons[code] = reasons.get(code, 0) + n
            if result.ignored_columns:
                err_console.print(f"[yellow]{path}: ignored columns[/] {result.ignored_columns}")
    console.print(summary)
    if reasons:
        why = Table("reason", "rows", title="rejected or skipped, by reason (see table rejects)")
        for code, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            why.add_row(code, f"{n:,}")
        console.print(why)
    if failed:
        raise typer.Exit(code=1)


@app.command()
def run(
    skip_prepare: Annotated[bool, typer.Option(
        "--skip-prepare", help="Journeys and credits only, on the prepared tables as they are.")
    ] = False,
    database: DatabaseOption = None,
) -> None:
    """The main job: prepare → journeys of every conversion type → credits under each model.

    Writes journeys, journey_touches and credits (replacing them); conversion types and models
    come from the settings (touchline.toml, docs/journeys.md).
    """
    from touchline import engine
    from touchline.config import load_settings
    from touchline.pipeline import RUN_PHASES
    from touchline.pipeline import run as run_pipeline

    try:
        settings = load_settings(**({"database_url": database} if database else {}))
        con = engine.connect(settings=settings)
        with step_bar("run") as tell:
            # one bar: prepare's steps, then the journeys, then the credits
            state = {"done": 0, "total": 2}

            def prepared(done: int, total: int, step: str) -> None:
                state.update(done=done, total=total + 2)
                tell(done, total + 2, f"prepare {done}/{total}: {step}")

            def said(message: str) -> None:
                for k, phase in enumerate(RUN_PHASES):
                    if message.startswith(phase):
                        state["done"] = state["total"] - len(RUN_PHASES) + k
                tell(state["done"], state["total"], message)

            report = run_pipeline(con, settings, prepare=not skip_prepare, progress=said,
                                  prepare_progress=prepared)
    except TouchlineError as exc:
        raise fail(exc) from None
    print_run(report)


def print_run(report: object, *, hint: bool = True) -> None:
    """The run's summary: conversions per type, the main one's credits by channel, where the
    tables are."""
    from touchline.pipeline import RunReport

    assert isinstance(report, RunReport)
    # headers on several lines and numbers never wrapped: the table fits 80 columns whole
    kinds = Table("conversion", *(Column(h, justify="right", no_wrap=True) for h in (
        "conversions", "value", "open\njourneys", "shortened\nby\nlookback",
        "no touch\nin window")), title="journeys by conversion type")
    for row in report.conversions.itertuples(index=False):
        kinds.add_row(str(row.conversion), f"{row.conversions:,}", f"{row.value:,.2f}",
                      f"{row.open_journeys:,}", f"{row.lookback_cut:,}",
                      f"{row.without_touches:,}")
    console.print(kinds)
    for conversion, reason in report.auto.items():
        console.print(f"[bold]auto[/] for {escape(conversion)}: {escape(reason)}",
                      highlight=False)
    for where, reason in report.markov_orders.items():
        console.print(f"[bold]markov order[/] for {escape(where)}: {escape(reason)}",
                      highlight=False)
    for conversion, models in report.flagged.items():
        named = "; ".join(f"{model}: {', '.join(channels)}" for model, channels in
                          models.items())
        console.print(f"[bold]intervals[/] for {escape(conversion)}: the credit of these "
                      f"channels reaches zero (no ground for budget; table credit_intervals): "
                      f"{escape(named)}", highlight=False)
    for warning in report.warnings:
        warn(warning)
    if report.main_conversion is None:
        console.print("[yellow]no conversions found:[/] check the conversion types in "
                      "touchline.toml (docs/journeys.md) against your events")
    else:
        table = Table("channel", "conversions", "value",
                      title=f"{report.main_conversion} credited by channel ({report.model})")
        for row in report.by_channel.itertuples(index=False):
            table.add_row(str(row.channel), f"{row.conversions:,.2f}", f"{row.value:,.2f}")
        console.print(table)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    rows = ", ".join(f"{k} {v:,}" for k, v in report.rows.items())
    console.print(f"[bold]tables:[/] {rows} in {report.database_url} ({timing})")
    if hint:
        console.print("[bold]next:[/] touchline attribute --model all --by campaign (or keyword, "
                      "source, landing_page…; --conversion to choose the type)")


@app.command()
def demo(
    people: Annotated[int, typer.Option(help="B2C people to simulate.")] = 20_000,
    b2b_people: Annotated[int, typer.Option(help="B2B stakeholders to simulate.")] = 3_000,
    b2b_accounts: Annotated[int, typer.Option(help="B2B companies.")] = 300,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 7,
    data: Annotated[Path, typer.Option(help="Folder for the simulated files.")] = Path(
        "demo-data"),
    via_http: Annotated[bool, typer.Option(
        "--via-http", help="Send the events through the collector's HTTP API.")] = False,
    database: DatabaseOption = None,
) -> None:
    """Simulate data with ground truth, load it, run every stage, and compare with the truth."""
    from touchline.config import load_settings
    from touchline.demo import run_demo

    try:
        settings = load_settings(**({"database_url": database} if database else {}))
        report = run_demo(
            settings, data_folder=data, people=people, b2b_people=b2b_people,
            b2b_accounts=b2b_accounts, seed=seed, via_http=via_http,
            progress=lambda message: err_console.print(f"[dim]… {message}[/]"),
        )
    except TouchlineError as exc:
        raise fail(exc) from None
    _print_demo(report)


DEMO_TABLE_MODELS = ("last_touch", "last_non_direct", "linear", "markov", "shapley",
                     "counterfactual", "auto")


def _print_demo(report: object) -> None:
    from touchline.cli.attribution import model_tables
    from touchline.demo import DemoReport
    from touchline.serve import HOST_DEFAULT, PORT_DEFAULT

    assert isinstance(report, DemoReport)
    loaded = Table("data set", "table", "loaded", "rejected", "duplicates",
                   title="ingested (simulated files, as a user would load them)")
    for dataset in report.datasets:
        for kind, (rows, rejected, dupes) in dataset.ingested.items():
            loaded.add_row(dataset.name, kind, f"{rows:,}", f"{rejected:,}", f"{dupes:,}")
    console.print(loaded)
    checks = Table("check", "touchline", "truth.json", "match", title="counts against the truth")
    for dataset in report.datasets:
        for label, got, want in dataset.checks:
            checks.add_row(label, f"{got:,}", f"{want:,}", "[green]yes[/]" if got == want
                           else "[red]no[/]")
    console.print(checks)
    if report.run is not None:
        print_run(report.run, hint=False)
    if report.sessions_by_channel is not None:
        sessions = Table("channel", "sessions", title="sessions by channel (prepared)")
        for row in report.sessions_by_channel.itertuples(index=False):
            sessions.add_row(str(row.channel), f"{row.sessions:,}")
        console.print(sessions)
    if report.stage_kpis is not None:
        kpis = report.stage_kpis
        for stage, rows in kpis.groupby("stage", sort=False):
            table = Table("KPI", "value", "unit", title=f"{stage}: headline KPIs "
                          f"({kpis.attrs.get('conversion')}, {kpis.attrs.get('model')} "
                          "credits; touchline kpis --stage " + str(stage) + ")")
            for row in rows.itertuples(index=False):
                table.add_row(row.kpi, readable_number(row.value), row.unit)
            console.print(table)
        for name, why in kpis.attrs.get("skipped", {}).items():
            err_console.print(f"[yellow]KPI {name} not shown:[/] {escape(why)}",
                              highlight=False)
    for dataset in report.datasets:
        if dataset.comparison is None or dataset.ranking is None:
            continue
        frame = dataset.comparison
        level = frame.columns[0]
        # the models a marketer knows best; the ranking below scores every model
        models = [c for c in frame.columns if c in DEMO_TABLE_MODELS]
        truth = dataset.truth["channels"]
        true = [truth.get(label, {}).get("incremental_conversions") for label in frame[level]]
        console.print(model_tables(
            frame[[level, *models]], width=console.width, leading={"truth": true},
            title=f"{dataset.name}: conversions credited by each model, beside the true "
                  "incremental conversions"))
        rankings = [(dataset.ranking, "true paths (paths.csv)")]
        if dataset.prepared_ranking is not None:
            rankings.append((dataset.prepared_ranking, "journeys rebuilt by prepare"))
        for frame_, label in rankings:
            ranking = Table("model", "L1 share distance", "worst channel", "Spearman",
                            title=f"{dataset.name}: models on {label}, ranked against the true "
                            "incremental conversions (touchline evaluate)")
            for row in frame_.itertuples(index=False):
                ranking.add_row(row.model, f"{row.l1_share:.3f}", str(row.worst_channel),
                                f"{row.spearman:.2f}")
            console.print(ranking)
        for where, reason in dataset.auto.items():
            console.print(f"[bold]auto[/] on {dataset.name} {where}: {escape(reason)}",
                          highlight=False)
    console.print(
        f"[bold]results:[/] warehouse {report.database_url} (tables: journeys, "
        f"journey_touches, credits, sessions, touchpoints, persons, accounts, rejects...), "
        f"simulated files and truth.json in {report.data_folder}/"
    )
    console.print(
        f"[bold]next:[/] touchline attribute --model all --by campaign --database "
        f"{report.database_url}   (--conversion lead, --by keyword, source...)"
    )
    if report.report_path is not None:
        for name, why in report.report_skipped.items():
            err_console.print(f"[yellow]report: {name} not drawn:[/] {escape(why)}",
                              highlight=False)
        console.print(f"[bold]report:[/] {report.report_path} (one self-contained file: open "
                      f"{report.report_path.resolve().as_uri()} in any browser, offline)")
        truth = " ".join(f"--truth {d.folder / 'truth.json'}" for d in report.datasets)
        console.print(f"[bold]dashboard:[/] touchline users create NAME --database "
                      f"{report.database_url}, then touchline dashboard --database "
                      f"{report.database_url} {truth} and open "
                      f"http://{HOST_DEFAULT}:{PORT_DEFAULT}", soft_wrap=True)


@app.command()
def tables(out: Annotated[Path | None, typer.Option(help="Write Markdown here.")] = None) -> None:
    """Print (or write) the documentation of the canonical tables."""
    from touchline import store

    text = store.tables_markdown()
    if out:
        out.write_text(text.rstrip() + "\n")
    else:
        console.print(text, markup=False, highlight=False)


from touchline.cli.collect import register as register_collect  # noqa: E402

register_collect(app)

from touchline.cli.attribution import register as register_attribution  # noqa: E402

register_attribution(app)

from touchline.cli.journeys import register as register_journeys  # noqa: E402
from touchline.cli.journeys import register_paths  # noqa: E402

register_journeys(app)
register_paths(app)

from touchline.cli.metrics import register as register_metrics  # noqa: E402

register_metrics(app)

from touchline.cli.prepare import register as register_prepare  # noqa: E402

register_prepare(app)

from touchline.cli.simulate import register as register_simulate  # noqa: E402

register_simulate(app)

from touchline.cli.serve import register as register_serve  # noqa: E402

register_serve(app)

from touchline.cli.exports import register as register_exports  # noqa: E402

register_exports(app)

from touchline.cli.privacy import register as register_privacy  # noqa: E402

register_privacy(app)


def _short_help_on_one_line(typer_app: typer.Typer) -> None:
    """Each command's line in its group's list of commands: the first paragraph of its
    docstring on one line. Typer's rich help keeps that paragraph's line breaks (the
    docstrings wrap at 99 columns), so ``touchline --help`` broke sentences mid-line."""
    for info in typer_app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and text:
            info.short_help = " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _short_help_on_one_line(group.typer_instance)


_short_help_on_one_line(app)


if __name__ == "__main__":  # pragma: no cover
    app()
