"""The terminal: how every CLI command prints an error and exits (one place, one format).

An error's text is printed as it is: file names, ``[columns]`` sections and the like are not
read as Rich markup (a mapping error once read ``use ,  and`` with its section names eaten).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from touchline.errors import TouchlineError

err_console = Console(stderr=True)


def fail(exc: TouchlineError | str, *, code: int = 2) -> typer.Exit:
    """Print ``error: <what and where>`` on stderr; return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True,
                      highlight=False)
    return typer.Exit(code=code)


def warn(text: str) -> None:
    """Print ``warning: <text>`` on stderr: what a command's figures leave out and why (the
    run's notes, won deals no conversion could name)."""
    err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)


def progress_bar(text: str) -> Progress:
    """The one look of touchline's progress bars, on stderr: spinner, ``text`` (a Rich
    ``TextColumn`` format), bar, done of all, time; gone when it ends (``transient``), so the
    command's own tables follow it."""
    return Progress(SpinnerColumn(), TextColumn(text), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True)


@contextmanager
def step_bar(what: str) -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar on stderr for a command made of counted steps (prepare's steps, the
    report's charts): yields ``tell(done, total, current)``. Gone when the command ends, so
    the command's own tables follow it; off when stderr is not a terminal."""
    with progress_bar(f"{what} [dim]{{task.fields[current]}}[/]") as progress:
        task = progress.add_task(what, total=None, current="")

        def tell(done: int, total: int, current: str) -> None:
            progress.update(task, completed=done, total=total, current=escape(current))

        yield tell
