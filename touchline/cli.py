"""The ``touchline`` command: a thin door over the package. Only this module prints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from touchline import engine, store
from touchline.config import load_settings
from touchline.errors import ConfigError, TouchlineError

app = typer.Typer(
    help="touchline: customer-journey tracking and multi-touch attribution.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]


def _fail(exc: TouchlineError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


@app.command()
def init(database: DatabaseOption = None) -> None:
    """Create the canonical tables in the warehouse."""
    try:
        settings = load_settings(**({"database_url": database} if database else {}))
        con = engine.connect(settings=settings)
        created = store.init(con)
    except TouchlineError as exc:
        raise _fail(exc) from None
    table = Table("table", "status", title=f"warehouse {settings.database_url}")
    for name in store.TABLES:
        table.add_row(name, "created" if name in created else "exists")
    console.print(table)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="CSV, NDJSON or Parquet files (.gz too).")],
    kind: Annotated[str, typer.Option(help=f"Target table: {', '.join(store.INGESTIBLE)}.")],
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
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from touchline.collect.ingest import ingest_file
    from touchline.collect.mapping import load_mapping

    try:
        settings = load_settings(**({"database_url": database} if database else {}))
        if kind not in store.INGESTIBLE:
            raise ConfigError(f"--kind {kind!r} is not one of {', '.join(store.INGESTIBLE)}")
        mapping = load_mapping(map_file, canonical={c.name for c in store.TABLES[kind].columns})
        con = engine.connect(settings=settings)
    except TouchlineError as exc:
        raise _fail(exc) from None
    failed = 0
    summary = Table("file", "read", "loaded", "rejected", "duplicates", "seconds",
                    title=f"ingest into {kind}")
    reasons: dict[str, int] = {}
    for path in paths:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err_console, transient=True) as progress:
            task = progress.add_task(f"{path.name}: reading", total=None)
            try:
                result = ingest_file(
                    con, path, kind, settings=settings, mapping=mapping, fmt=fmt, source=source,
                    progress=lambda n, t=task: progress.update(
                        t, description=f"{path.name}: {n:,} records read"),
                )
            except TouchlineError as exc:
                failed += 1
                err_console.print(f"[bold red]error:[/] {exc}")
                continue
        summary.add_row(str(path), f"{result.rows_read:,}", f"{result.loaded:,}",
                        f"{result.rejected:,}", f"{result.duplicates:,}", f"{result.seconds:.1f}")
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
def tables(out: Annotated[Path | None, typer.Option(help="Write Markdown here.")] = None) -> None:
    """Print (or write) the documentation of the canonical tables."""
    text = store.tables_markdown()
    if out:
        out.write_text(text + "\n")
    else:
        console.print(text, markup=False, highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
