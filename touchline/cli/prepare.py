"""``touchline prepare``: the CLI door to :func:`touchline.prepare.run_prepare`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from touchline.errors import TouchlineError
from touchline.terminal import fail, step_bar


def register(app: typer.Typer) -> None:
    """Add the ``prepare`` command to the touchline CLI."""

    @app.command()
    def prepare(
        database: Annotated[str | None, typer.Option(
            "--database", "-d", help="Warehouse URL (default from settings).")] = None,
    ) -> None:
        """Rebuild touchpoints, sessions, identities, persons and accounts from raw events.

        Every dropped row goes to `rejects` and every changed value to `audit`, with the step.
        """
        from touchline import engine
        from touchline.config import load_settings
        from touchline.prepare import run_prepare

        console = Console()
        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            con = engine.connect(settings=settings)
            with step_bar("prepare") as tell:
                result = run_prepare(con, settings, progress=tell)
        except TouchlineError as exc:
            raise fail(exc) from None
        steps = Table("step", "seconds", "rejected", "audit rows", title=f"prepare {result.run_id}")
        for s in result.steps:
            steps.add_row(s.name, f"{s.seconds:.2f}", f"{s.rejected:,}", f"{s.audited:,}")
        console.print(steps)
        counts = Table("table", "rows", title="prepared tables")
        for name, n in result.counts.items():
            counts.add_row(name, f"{n:,}")
        console.print(counts)
        if result.channel_changes:
            changed = Table("old channel", "new channel", "sessions",
                            title="sessions reclassified since the last run")
            for (old, new), n in sorted(result.channel_changes.items()):
                changed.add_row(old, new, f"{n:,}")
            console.print(changed)
        if result.unmatched_spend_channels:
            from touchline.metrics.kpis import unmatched_spend_note

            console.print(unmatched_spend_note(result.unmatched_spend_channels), markup=False,
                          highlight=False)
