"""``touchline simulate``: the command-line door to :func:`touchline.simulate.simulate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from touchline.errors import SimulationError, TouchlineError
from touchline.terminal import fail

if TYPE_CHECKING:
    from touchline.simulate import SeasonalDip

#: :data:`touchline.simulate.FORMATS` and :data:`~touchline.simulate.CHUNK_PEOPLE_DEFAULT`,
#: copied: the options' help and default are built when the CLI starts, and importing the
#: simulator (numpy) for them would slow every ``touchline --help``; a test keeps them equal
FORMATS = ("ndjson", "parquet", "both")
CHUNK_PEOPLE_DEFAULT = 50_000


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app``."""

    @app.command("simulate")
    def simulate_command(
        people: Annotated[int, typer.Option("--people", "-n", help="People to simulate.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the files.")],
        seed: Annotated[int, typer.Option("--seed", "-s", help="Same seed, same bytes.")] = 7,
        b2b: Annotated[bool, typer.Option("--b2b", help="Companies, stakeholders, deals.")] = False,
        accounts: Annotated[
            int | None, typer.Option("--accounts", help="Companies in B2B mode (people/5).")
        ] = None,
        fmt: Annotated[
            str, typer.Option("--format", "-f", help=f"Events as {' | '.join(FORMATS)}.")
        ] = "ndjson",
        chunk_people: Annotated[
            int, typer.Option("--chunk-people", help="People per chunk (bounds memory).")
        ] = CHUNK_PEOPLE_DEFAULT,
        seasonal_dip: Annotated[
            str | None, typer.Option(
                "--seasonal-dip", metavar="MONTH:FACTOR",
                help="Repeat orders drop every year in a calendar month, e.g. 3:0.3 (March: "
                     "30 % of them happen); truth.json states the dip.")
        ] = None,
    ) -> None:
        """Write realistic, deterministic data with a known right answer (truth.json)."""
        from touchline.simulate import simulate

        console = Console()
        try:
            dip = None if seasonal_dip is None else parse_dip(seasonal_dip)
            with console.status(f"simulating {people:,} people…"):
                summary = simulate(people, seed, out, b2b=b2b, accounts=accounts, fmt=fmt,
                                   chunk_people=chunk_people, seasonal_dip=dip)
        except TouchlineError as exc:
            raise fail(exc) from None
        truth = json.loads((summary.out / "truth.json").read_text())
        counts = truth["counts"]
        table = Table("file", "bytes", title=f"simulated into {summary.out}")
        for path in summary.files:
            table.add_row(path.name, f"{path.stat().st_size:,}")
        console.print(table)
        console.print(
            f"{counts['persons']:,} people"
            + (f" in {counts['accounts']:,} accounts" if b2b else "")
            + f", {counts['events_written']:,} events written ({counts['unique_events']:,} "
            f"unique, {counts['bot_events']:,} bots, {counts['duplicate_events']:,} "
            f"duplicates), {counts['conversions']:,} conversions, revenue "
            f"{counts['revenue']:,.2f} USD in {summary.seconds:.1f} s "
            f"({summary.events_per_second:,.0f} events/s)"
        )


def parse_dip(text: str) -> SeasonalDip:
    """``MONTH:FACTOR`` (``3:0.3``) as a :class:`SeasonalDip`; :class:`SimulationError` naming
    the text otherwise."""
    from touchline.simulate import SeasonalDip

    month, sep, factor = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return SeasonalDip(int(month), float(factor))
    except ValueError as exc:
        detail = f": {exc}" if isinstance(exc, SimulationError) else ""
        raise SimulationError(f"--seasonal-dip {text!r}: expected MONTH:FACTOR, a calendar "
                              f"month 1-12 and the share of its repeat orders that still "
                              f"happen, e.g. 3:0.3{detail}") from None
