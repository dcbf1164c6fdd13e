"""The shapes every preparation step shares: :class:`Step`, :class:`Split`, :class:`Context`.

A step is a function ``fn(tables, ctx) -> StepResult``: it reads named Ibis tables (the working
``events`` and whatever earlier steps produced), and returns replacements or new tables, the rows
it dropped (``rejected``) and the values it changed (``audit``). It never writes: the runner
(:mod:`touchline.prepare.runner`) stores rejects and audit rows under the step's name, so every
dropped or altered row can be explained afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from touchline import engine

if TYPE_CHECKING:
    import pandas as pd
    from ibis.backends import BaseBackend

    from touchline.config import Settings

#: columns every rejected table carries (besides the rejected row's own columns)
REJECT_FIELDS = ("reason_code", "reason")
#: prefix of the scratch tables a prepare run creates and drops
# not "_"-prefixed: Spark skips Parquet files whose names start with "_" (engine.load_table)
SCRATCH_PREFIX = "tmp_prepare_"


@dataclass(frozen=True)
class Split:
    """The outcome of a filtering step: ``kept`` + ``rejected`` = input, row for row.

    ``rejected`` keeps the input's columns and adds ``reason_code``, ``reason`` and optionally
    ``field`` and ``ref`` (the key of the surviving record, for duplicates).
    """

    kept: ir.Table
    rejected: ir.Table


@dataclass(frozen=True)
class StepResult:
    """What a step hands back to the runner.

    ``stored``: names of scratch tables the step stored its working ``events`` in (a step
    that must store its input anyway, as :func:`touchline.prepare.steps.dedupe_exact` does,
    is its own checkpoint): the runner drops them, as it drops its checkpoints, once no
    working table reads them.
    """

    tables: Mapping[str, ir.Table] = field(default_factory=dict)
    rejected: ir.Table | None = None
    audit: ir.Table | None = None
    stored: tuple[str, ...] = ()


@dataclass(frozen=True)
class Context:
    """What a step may know besides its input tables: the engine, the settings and the clock.

    ``now`` is injected (not read from the system clock inside steps) so that a run is
    reproducible and tests can pin it.
    """

    con: BaseBackend
    settings: Settings
    now: datetime
    run_id: str

    def lookup(self, name: str, data: pa.Table | pd.DataFrame) -> ir.Table:
        """Put a small Python-side table (reference data, per-value library results) on the
        engine, as a scratch table dropped at the end of the run."""
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(
            data, preserve_index=False)
        return engine.scratch_lookup(self.con, f"{SCRATCH_PREFIX}{name}", table)


StepFn = Callable[[Mapping[str, ir.Table], Context], StepResult]


@dataclass(frozen=True)
class Step:
    """A named preparation step with the one-line reason it exists.

    ``persist_as`` names the prepared table the working ``events`` become at this step (its
    columns are conformed to that table's spec). It is a checkpoint written once into the
    warehouse: under a scratch name while the run goes on, renamed at its end, so the largest
    table is not written twice (once as a scratch copy, once as the result).

    ``stage`` stores the working ``events`` after the step on Spark only
    (:func:`touchline.engine.stage_input`), so that later steps do not plan the chain before
    it again: Spark plans it under every later query that reads it, where DuckDB plans it in
    milliseconds and fuses it into one scan. The step's rejects and audit are then evaluated
    on the stored rows wherever they derive from its output. (A step that must store its input
    anyway stores it itself and names it in :attr:`StepResult.stored`, as exact dedupe does.)
    """

    name: str
    fn: StepFn
    why: str
    stage: bool = False
    persist_as: str | None = None


def reject(table: ir.Table, code: str, reason: str, *, field_name: str | None = None) -> ir.Table:
    """Tag rows as rejected with a stable ``code`` and a human ``reason``."""
    return table.mutate(
        reason_code=ibis.literal(code),
        reason=ibis.literal(reason),
        field=ibis.literal(field_name, type="string"),
    )


def split(table: ir.Table, drop: ir.BooleanValue, code: str, reason: str,
          *, field_name: str | None = None) -> Split:
    """Split on a predicate; a null predicate counts as *keep* (else the row would vanish
    from both sides)."""
    bad = drop.fill_null(False)
    return Split(kept=table.filter(~bad),
                 rejected=reject(table.filter(bad), code, reason, field_name=field_name))


def split_by_lookup(table: ir.Table, key: ir.Value, lookup: ir.Table, lookup_key: str,
                    code: str, reason: str, *, field_name: str | None = None) -> Split:
    """Split off the rows whose ``key`` is in ``lookup[lookup_key]``, by anti and semi joins
    rather than a filter on ``isin``: the engine then estimates the kept side's size right
    (DuckDB guesses a fraction for such a filter, and later hashes the wrong side of a join)."""
    match = key == lookup[lookup_key]
    return Split(kept=table.anti_join(lookup, match),
                 rejected=reject(table.semi_join(lookup, match), code, reason,
                                 field_name=field_name))


def empty_like(table: ir.Table) -> ir.Table:
    """No rows, same schema: a step with nothing to reject."""
    return table.filter(ibis.literal(False))
