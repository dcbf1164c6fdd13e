"""CLI doors to the stored journeys: ``touchline person``, ``account``, ``paths``, ``funnel``."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from touchline.errors import ConfigError, TouchlineError
from touchline.terminal import fail

err_console = Console(stderr=True)
DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Warehouse URL (default from settings).")
]




def _connect(database: str | None) -> tuple[object, object]:
    from touchline import engine
    from touchline.config import load_settings

    settings = load_settings(**({"database_url": database} if database else {}))
    con = engine.connect(settings=settings)
    if "journeys" not in set(con.list_tables()):
        raise ConfigError(f"warehouse {settings.database_url} has no journeys: run "
                          "`touchline run` first")
    return settings, con


def _conversion(con: object, name: str | None, unit: tuple[str, str] | None = None) -> str:
    """The conversion type asked for (checked), or by default the one with the most value:
    of the person's or account's own journeys when ``unit`` is given."""
    from touchline.journeys.conversions import choose_conversion

    journeys = con.table("journeys")  # type: ignore[attr-defined]
    if name is None and unit is not None:
        own = journeys.filter((journeys.unit == unit[0]) & (journeys.unit_id == unit[1]))
        if own.filter(own.converted).count().execute():
            journeys = own
    return choose_conversion(journeys, name)


def show_timeline(id_: str, model: str | None, conversion: str | None, stage_model: str | None,
                  database: str | None, expect: str | None) -> None:
    """Print the timeline of the person or account ``id_`` names."""
    from touchline.journeys.timeline import resolve_unit, timeline

    try:
        settings, con = _connect(database)
        unit, unit_id = resolve_unit(con, id_, phone_region=settings.phone_region,
                                     pii_key=settings.pii_key_at_rest)
        if expect is not None and unit != expect:
            raise ConfigError(f"{id_!r} names {unit} {unit_id}; use `touchline {unit}`")
        model = model or settings.default_model
        conversion = _conversion(con, conversion, (unit, unit_id))
        rows = timeline(con, unit, unit_id, model=model, conversion=conversion,
                        stage_model=stage_model or settings.stage_model,
                        pii_key=settings.pii_key_at_rest).to_pandas()
    except TouchlineError as exc:
        raise fail(exc) from None
    people = {p: f"P{i}" for i, p in enumerate(sorted(rows.person_id.dropna().unique()), 1)}
    columns = ["time", "what", "channel", "source / keyword", "landing", "detail",
               f"{model} credit"]
    if unit == "account":
        columns.insert(1, "who")
    table = Table(*columns, title=f"{unit} {unit_id}: {len(rows):,} moments; credits of "
                  f"{conversion} under {model}"
                  + (f"; stakeholders {', '.join(f'{v}={k}' for k, v in people.items())}"
                     if unit == "account" else ""))
    table.columns[0].no_wrap = True
    for row in rows.itertuples(index=False):
        def text(value: object) -> str:
            return "" if value is None or value != value else str(value)

        source = " / ".join(v for v in (text(row.source), text(row.keyword)) if v
                            and v != "(not set)")
        credit = "" if row.credit != row.credit or row.credit is None else (
            f"{row.credit:.2f} = {row.value:,.2f}")
        value = "" if row.kind == "touch" or row.value != row.value else f" ({row.value:,.2f})"
        style = {"stage": "bold cyan", "conversion": "bold green", "deal": "green",
                 "survey": "magenta"}.get(row.kind, "")
        parts = urlsplit(text(row.landing_page))
        landing = (parts.path or "/") if parts.netloc else text(row.landing_page)
        detail = text(row.detail).removeprefix(f"{stage_model or settings.stage_model}: ")
        cells = [str(row.at)[:16], f"[{style}]{row.kind}[/]" if style else row.kind,
                 text(row.channel), source, landing, detail + value, credit]
        if unit == "account":
            cells.insert(1, people.get(row.person_id, ""))
        table.add_row(*cells)
    Console().print(table)  # made now: the terminal's width when the command runs


def register(app: typer.Typer) -> None:
    """Add the journey commands to the touchline CLI."""

    @app.command()
    def person(
        id_: Annotated[str, typer.Argument(
            metavar="ID", help="Person id, user id, e-mail, phone, CRM contact id or "
            "anonymous id.")],
        model: Annotated[str | None, typer.Option(help="Model of the credit column.")] = None,
        conversion: Annotated[str | None, typer.Option(help="Conversion type credited.")] = None,
        stage_model: Annotated[str | None, typer.Option(help="Stage model shown.")] = None,
        database: DatabaseOption = None,
    ) -> None:
        """A person's timeline: every touch, stage, conversion, deal and answer, with credits."""
        show_timeline(id_, model, conversion, stage_model, database, None)

    @app.command()
    def account(
        id_: Annotated[str, typer.Argument(metavar="ID", help="Account id (crm:…, domain:…) "
                                           "or the CRM's account id.")],
        model: Annotated[str | None, typer.Option(help="Model of the credit column.")] = None,
        conversion: Annotated[str | None, typer.Option(help="Conversion type credited.")] = None,
        stage_model: Annotated[str | None, typer.Option(help="Stage model shown.")] = None,
        database: DatabaseOption = None,
    ) -> None:
        """An account's timeline, each stakeholder labelled."""
        show_timeline(id_, model, conversion, stage_model, database, "account")


def register_paths(app: typer.Typer) -> None:
    """Add ``touchline paths`` to the CLI."""

    @app.command()
    def paths(
        to: Annotated[str, typer.Option(help="conversion, drop-off or all.")] = "conversion",
        level: Annotated[str, typer.Option(help="channel, source, campaign, keyword, "
                                           "landing_page, content or stage.")] = "channel",
        conversion: Annotated[str | None, typer.Option(help="Conversion type (default: the "
                                                       "one with the most value).")] = None,
        top: Annotated[int, typer.Option(help="Paths shown; the rest are 'other'.")] = 10,
        repeats: Annotated[bool, typer.Option(help="Keep repeated labels (Email > Email); "
                                              "by default a run of one label counts once.")
                           ] = False,
        sankey: Annotated[bool, typer.Option(help="Print Sankey links (step, source, target, "
                                             "journeys) instead.")] = False,
        database: DatabaseOption = None,
    ) -> None:
        """Top paths to conversion or to drop-off, with counts and conversion rates."""
        from touchline.journeys.build import LEVELS
        from touchline.journeys.top_paths import sankey_links, top_paths

        try:
            _, con = _connect(database)
            known = [*LEVELS, "stage"]
            if level not in known:
                raise ConfigError(f"--level {level!r}: choose from {', '.join(known)}")
            if to not in ("conversion", "drop-off", "all"):
                raise ConfigError(f"--to {to!r}: choose from conversion, drop-off, all")
            conversion = _conversion(con, conversion)
            jt = con.table("journey_touches")  # type: ignore[attr-defined]
            mine = jt.filter(jt.conversion == conversion)
            if sankey:
                links = sankey_links(mine, level=level).order_by(
                    ["step", ibis_desc("journeys"), "source", "target"]).to_pandas()
            else:
                frame = top_paths(mine, level=level, top=top, to=to, collapse=not repeats)
        except TouchlineError as exc:
            raise fail(exc) from None
        if sankey:
            table = Table("step", "source", "target", "journeys",
                          title=f"{conversion}: Sankey links by {level}")
            for row in links.itertuples(index=False):
                table.add_row(str(row.step), row.source, row.target, f"{row.journeys:,}")
        else:
            table = Table("path", "journeys", "share", "conversions", "rate", "value",
                          title=f"{conversion}: top paths to {to} by {level}")
            for row in frame.itertuples(index=False):
                table.add_row(row.path, f"{row.journeys:,}", f"{row.share:.1%}",
                              f"{row.conversions:,}", f"{row.conversion_rate:.1%}",
                              f"{row.value:,.2f}")
        Console().print(table)  # made now: the terminal's width when the command runs


def ibis_desc(column: str) -> object:
    import ibis

    return ibis.desc(column)
