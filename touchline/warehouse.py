"""``touchline.open``: the stored tables of a warehouse as Ibis tables, for notebooks.

>>> import touchline
>>> wh = touchline.open("duckdb://")  # an empty in-memory warehouse
>>> wh.run(prepare=False).rows["journeys"]
0
>>> wh.credits(model="linear", by="campaign").columns
('campaign', 'conversions', 'value')

Every method returns an Ibis table (call ``.to_pandas()``, or keep going in Ibis or SQL), so
nothing is computed until asked, on DuckDB or on Spark alike.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import ibis

from touchline import engine, store
from touchline.config import Settings, load_settings
from touchline.errors import ConfigError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    from ibis.backends import BaseBackend

    from touchline.pipeline import RunReport


class Warehouse:
    """A touchline warehouse: run the main job, read journeys, credits, funnels, paths and
    timelines."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.con: BaseBackend = engine.connect(settings=settings)
        store.init(self.con)

    def __repr__(self) -> str:
        return f"Warehouse({self.settings.database_url!r})"

    def table(self, name: str) -> ir.Table:
        """Any stored table (``docs/tables.md``)."""
        return self.con.table(name)

    def run(self, *, prepare: bool = True) -> RunReport:
        """``touchline run``: prepare, journeys, stages and credits, stored."""
        from touchline.pipeline import run

        return run(self.con, self.settings, prepare=prepare)

    def _conversion(self, conversion: str | None) -> str | None:
        """The conversion type asked for (checked), or the one with the most value; None
        when the warehouse has no conversions yet."""
        from touchline.errors import ConfigError
        from touchline.journeys.conversions import choose_conversion

        try:
            return choose_conversion(self.con.table("journeys"), conversion,
                                     option="conversion")
        except ConfigError:
            if conversion is not None:
                raise
            return None

    def journeys(self, conversion: str | None = None) -> ir.Table:
        """One row per journey (of one conversion type, or all)."""
        j = self.con.table("journeys")
        return j if conversion is None else j.filter(j.conversion == conversion)

    def journey_touches(self, conversion: str | None = None) -> ir.Table:
        """The ordered touches of every journey (of one conversion type, or all)."""
        t = self.con.table("journey_touches")
        return t if conversion is None else t.filter(t.conversion == conversion)

    def credits(self, model: str | None = None, *, by: str = "channel",
                conversion: str | None = None, since: datetime | None = None,
                until: datetime | None = None) -> ir.Table:
        """Conversions and value credited by ``model`` (default: the settings' default model)
        summed by ``by`` (channel, source, medium, campaign, keyword, landing_page, content or
        stage), for conversions in ``[since, until)``."""
        from touchline.journeys import LEVELS

        known = [*LEVELS, "stage"]
        if by not in known:
            raise ConfigError(f"by {by!r}: choose from {', '.join(known)}")
        c = self.con.table("credits")
        c = c.filter((c.model == (model or self.settings.default_model))
                     & (c.conversion == (self._conversion(conversion) or "")))
        if since is not None:
            c = c.filter(c.converted_at >= ibis.literal(since))
        if until is not None:
            c = c.filter(c.converted_at < ibis.literal(until))
        if by != "channel":
            t = self.con.table("journey_touches").select("journey_id", "position", _by=by)
            c = c.inner_join(t, ["journey_id", "position"]).mutate(channel=ibis._._by)
        out = c.group_by(c.channel.name(by)).aggregate(conversions=c.credit.sum(),
                                                       value=c.value.sum())
        return out.order_by(ibis.desc("conversions"))

    def funnel(self, steps: list[str], *, window: timedelta | None = None,
               mode: str | None = None, by: str | None = None, unit: str = "person"
               ) -> ir.Table:
        """:func:`touchline.metrics.funnels.funnel` on this warehouse (``mode`` None:
        cumulative when every step is a stage, else ordered)."""
        from touchline.metrics.funnels import funnel

        return funnel(self.con, steps, window=window, mode=mode, by=by, unit=unit,
                      stage_model=self.settings.stage_model)

    def paths(self, *, conversion: str | None = None, level: str = "channel",
              to: str = "conversion", collapse: bool = False) -> ir.Table:
        """Distinct paths with journeys, conversions and value (``to``: conversion,
        drop-off or all)."""
        from touchline.journeys.top_paths import path_counts

        t = self.journey_touches(self._conversion(conversion))
        if to == "conversion":
            t = t.filter(t.converted)
        elif to == "drop-off":
            t = t.filter(~t.converted)
        return path_counts(t, level=level, collapse=collapse)

    def timeline(self, id_: str, *, model: str | None = None,
                 conversion: str | None = None) -> ir.Table:
        """The timeline of the person or account ``id_`` names (any id, e-mail or phone)."""
        from touchline.journeys.timeline import resolve_unit, timeline

        unit, unit_id = resolve_unit(self.con, id_, phone_region=self.settings.phone_region,
                                     pii_key=self.settings.pii_key_at_rest)
        return timeline(self.con, unit, unit_id, model=model or self.settings.default_model,
                        conversion=self._conversion(conversion),
                        stage_model=self.settings.stage_model,
                        pii_key=self.settings.pii_key_at_rest)


def open(url_or_settings: str | Settings | None = None, **overrides: Any) -> Warehouse:
    """Open a warehouse by URL (``duckdb:///touchline.duckdb``, ``spark://local[2]``) or
    :class:`~touchline.config.Settings` (default: the settings from the environment and
    ``touchline.toml``)."""
    if isinstance(url_or_settings, Settings):
        return Warehouse(url_or_settings)
    if url_or_settings is not None:
        overrides["database_url"] = url_or_settings
    return Warehouse(load_settings(**overrides))
