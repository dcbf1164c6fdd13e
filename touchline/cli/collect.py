"""CLI commands of the collector: ``serve``, ``load``, ``keys``, ``snippet``, ``calls match``.

Registered on the main Typer app by :func:`register`; like the rest of the CLI, only this layer
prints.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from touchline.errors import TouchlineError
from touchline.terminal import fail

if TYPE_CHECKING:
    from touchline.config import Settings

console = Console()
err_console = Console(stderr=True)
log = logging.getLogger(__name__)

DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]


def _settings(database: str | None, **overrides: object) -> Settings:
    from touchline.config import load_settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if database:
        values["database_url"] = database
    return load_settings(**values)




def snippet_html(host: str, write_key: str) -> str:
    """The tag a site pastes before ``</head>``."""
    return f'<script async src="{host}/t.js" data-host="{host}" data-key="{write_key}"></script>'


def register(app: typer.Typer) -> None:
    """Add the collector's commands to ``app``."""
    keys_app = typer.Typer(help="API keys of the collector and the read API.", no_args_is_help=True)
    calls_app = typer.Typer(
        help="Call tracking: match calls to number leases.", no_args_is_help=True
    )
    app.add_typer(keys_app, name="keys")
    app.add_typer(calls_app, name="calls")

    @app.command()
    def serve(
        database: DatabaseOption = None,
        host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
        port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
        workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
        spool_dir: Annotated[str | None, typer.Option(help="Spool folder.")] = None,
    ) -> None:
        """Run the Segment-compatible collector (and its loader) until interrupted."""
        from touchline.collect.server import serve as run

        try:
            settings = _settings(
                database,
                collector_host=host,
                collector_port=port,
                collector_workers=workers,
                spool_dir=spool_dir,
            )
            err_console.print(
                f"collector on http://{settings.collector_host}:{settings.collector_port} "
                f"({settings.collector_workers} worker(s)), spool {settings.spool_dir}"
            )
            run(settings)
        except TouchlineError as exc:
            raise fail(exc) from None

    @app.command()
    def load(
        database: DatabaseOption = None,
        spool_dir: Annotated[str | None, typer.Option(help="Spool folder.")] = None,
    ) -> None:
        """Load the collector's spool into the warehouse once (when `serve` is not running)."""
        from touchline import engine

        try:
            settings = _settings(database, spool_dir=spool_dir)
            with engine.connected(settings=settings) as con:
                from touchline.collect.loader import load_spool

                report = load_spool(con, settings)
        except TouchlineError as exc:
            raise fail(exc) from None
        console.print(
            f"loaded {report.events} events, {report.rejects} rejects "
            f"({report.duplicates} duplicates), {report.deals} deals, {report.calls} calls, "
            f"{report.leases} leases"
        )

    @keys_app.command("create")
    def keys_create(
        name: Annotated[str, typer.Option(help="What the key is for, e.g. web.")],
        kind: Annotated[
            str,
            typer.Option(help="write (public, for t.js and apps: tracking only), server "
                         "(server-side tracking and webhooks), import (back-fills: keeps "
                         "receivedAt), read or admin (also /v1/stats)."),
        ] = "write",
        database: DatabaseOption = None,
    ) -> None:
        """Create a key and print it once; only its hash is stored."""
        from touchline import engine, store
        from touchline.collect import keys as api_keys

        try:
            settings = _settings(database)
            with engine.connected(settings=settings) as con:
                store.init(con)
                key, record = api_keys.create_key(con, name=name, kind=kind)
        except TouchlineError as exc:
            raise fail(exc) from None
        err_console.print(
            f"created {record.kind} key {record.key_id}… for {record.name!r}; it is shown only now:"
        )
        console.print(key, markup=False, highlight=False, soft_wrap=True)

    @keys_app.command("list")
    def keys_list(database: DatabaseOption = None) -> None:
        """List keys (never the keys themselves)."""
        from touchline import engine, store
        from touchline.collect import keys as api_keys

        try:
            with engine.connected(settings=_settings(database)) as con:
                store.init(con)
                rows = api_keys.list_keys(con)
        except TouchlineError as exc:
            raise fail(exc) from None
        names = ("key_id", "name", "kind", "created_at", "revoked_at")
        table = Table(*names)
        for row in rows:
            table.add_row(*(str(row[c] or "") for c in names))
        console.print(table)

    @keys_app.command("revoke")
    def keys_revoke(key_id: str, database: DatabaseOption = None) -> None:
        """Revoke a key by its id (the collector stops accepting it within seconds)."""
        from touchline import engine, store
        from touchline.collect import keys as api_keys

        try:
            with engine.connected(settings=_settings(database)) as con:
                store.init(con)
                found = api_keys.revoke_key(con, key_id)
        except TouchlineError as exc:
            raise fail(exc) from None
        if not found:
            err_console.print(f"[bold red]error:[/] no key {key_id!r}")
            raise typer.Exit(code=2)
        console.print(f"revoked {key_id}")

    @app.command()
    def snippet(
        key: Annotated[str, typer.Option(help="A write key (touchline keys create).")],
        host: Annotated[str | None, typer.Option(help="Public URL of the collector.")] = None,
    ) -> None:
        """Print the t.js tag to paste into every page."""
        from touchline.config import load_settings

        settings = load_settings()
        url = host or f"http://{settings.collector_host}:{settings.collector_port}"
        console.print(
            snippet_html(url.rstrip("/"), key), markup=False, highlight=False, soft_wrap=True
        )

    @calls_app.command("match")
    def calls_match(database: DatabaseOption = None) -> None:
        """Match new calls to number leases and add them to events as touches."""
        from touchline import engine, store

        try:
            settings = _settings(database)
            with engine.connected(settings=settings) as con:
                store.init(con)
                from touchline.collect.dni import match_new_calls

                summary = match_new_calls(con, settings)
        except TouchlineError as exc:
            raise fail(exc) from None
        table = Table("match status", "calls")
        for status, count in sorted(summary.items()):
            table.add_row(status, str(count))
        console.print(table)
