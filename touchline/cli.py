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
from touchline.errors import TouchlineError

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
def tables(out: Annotated[Path | None, typer.Option(help="Write Markdown here.")] = None) -> None:
    """Print (or write) the documentation of the canonical tables."""
    text = store.tables_markdown()
    if out:
        out.write_text(text + "\n")
    else:
        console.print(text, markup=False, highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
