"""The terminal: how every CLI command prints an error and exits (one place, one format).

An error's text is printed as it is: file names, ``[columns]`` sections and the like are not
read as Rich markup (a mapping error once read ``use ,  and`` with its section names eaten).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from touchline.errors import TouchlineError

err_console = Console(stderr=True)


def fail(exc: TouchlineError | str, *, code: int = 2) -> typer.Exit:
    """Print ``error: <what and where>`` on stderr; return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True,
                      highlight=False)
    return typer.Exit(code=code)
