"""``touchline erase``, ``retention apply``, ``privacy rehash``: the CLI doors to
:mod:`touchline.privacy`. Only this module (and ``touchline.cli``) prints; it never prints
the identifier it was given."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from touchline.errors import TouchlineError
from touchline.terminal import fail

console = Console()

DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]


def register(app: typer.Typer) -> None:
    """Add ``erase``, ``retention apply`` and ``privacy rehash`` to the ``touchline`` app."""

    retention_app = typer.Typer(help="Retention of raw data (raw_event_retention_days, "
                                "raw_retention_days).",
                                no_args_is_help=True)
    app.add_typer(retention_app, name="retention")

    @retention_app.command("apply")
    def retention_apply(database: DatabaseOption = None) -> None:
        """Delete raw events and calls older than their retention, empty the personal data
        of older surveys, reviews, deals, number leases and rejects (`touchline run` does
        it after preparing; run this after a run). Prepared tables, journeys and credits stay."""
        from touchline import engine
        from touchline.config import load_settings
        from touchline.privacy import apply_retention
        from touchline.privacy.retention import retention_days

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            with engine.connected(settings=settings) as con:
                done = apply_retention(con, settings)
        except TouchlineError as exc:
            raise fail(exc) from None
        days = retention_days(settings)
        for table, rows in done.items():
            verb = "deleted" if table in ("events", "calls") else "emptied of personal data"
            console.print(f"{table}: {rows:,} rows older than {days[table]} days {verb}")
        console.print("Touches, journeys and credits stay.")

    privacy_app = typer.Typer(help="Personal data at rest (pii_at_rest).", no_args_is_help=True)
    app.add_typer(privacy_app, name="privacy")

    @privacy_app.command("rehash")
    def rehash_command(
        database: DatabaseOption = None,
        run: Annotated[bool, typer.Option(
            "--run/--no-run", help="Rebuild the prepared tables afterwards (touchline run).")
        ] = True,
    ) -> None:
        """Key the e-mails and phone numbers of rows loaded before pii_at_rest = "hashed" was
        switched on, in every raw table, as a hashed load would have; then rebuild the
        prepared tables, journeys and credits from them. Running it again changes nothing."""
        from touchline import engine
        from touchline.config import load_settings
        from touchline.pipeline import run as run_pipeline
        from touchline.privacy import rehash

        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            with engine.connected(settings=settings) as con:
                done = rehash(con, settings)
                if run:
                    run_pipeline(con, settings)
        except TouchlineError as exc:
            raise fail(exc) from None
        for table, rows in done.items():
            console.print(f"{table}: {rows:,} rows rewritten")
        console.print("Prepared tables rebuilt." if run else
                      "Run `touchline run` to rebuild the prepared tables.")

    @app.command("erase")
    def erase_command(
        email: Annotated[str | None, typer.Option(help="E-mail address (any case).")] = None,
        phone: Annotated[str | None, typer.Option(
            help="Phone number (any format; settings.phone_region without a country code).")
        ] = None,
        user_id: Annotated[str | None, typer.Option(help="The site's user id.")] = None,
        anonymous_id: Annotated[str | None, typer.Option(
            help="A device's anonymous id (cookie).")] = None,
        person: Annotated[str | None, typer.Option(help="A person id (p_…).")] = None,
        database: DatabaseOption = None,
    ) -> None:
        """Erase the person an identifier names from every table, the collector's spool and
        its number leases; log it in `erasures` with a keyed hash of the identifier only.

        Run `touchline run` afterwards: accounts and account journeys are rebuilt without
        the person.
        """
        from touchline import engine
        from touchline.config import load_settings
        from touchline.privacy import erase

        given = {k: v for k, v in (("email", email), ("phone", phone), ("user_id", user_id),
                                   ("anonymous_id", anonymous_id), ("person", person)) if v}
        if len(given) != 1:
            raise fail("give exactly one of --email, --phone, --user-id, --anonymous-id, "
                       "--person")
        [(kind, value)] = given.items()
        try:
            settings = load_settings(**({"database_url": database} if database else {}))
            with engine.connected(settings=settings) as con:
                done = erase(con, settings, kind=kind, value=value)
        except TouchlineError as exc:
            raise fail(exc) from None
        table = Table("place", "rows removed")
        for place, count in done.rows.items():
            if count:
                table.add_row(place, f"{count:,}")
        console.print(table)
        console.print(f"erasure {done.erasure_id}: {done.person_count} person(s) found by "
                      f"{kind}, {done.total:,} rows removed; logged in table erasures (a keyed "
                      "hash only). Run `touchline run` to rebuild accounts and account "
                      "journeys.", soft_wrap=True)
