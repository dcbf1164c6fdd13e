"""What every writer and validator shares: the conversion record, the format registry, the
checks all three platforms make.

A writer turns :class:`Conversion` records into the text a platform takes (a CSV it imports,
the JSON body of its API); a validator, run first, refuses the records the platform would
refuse, each with the platform's own error name, so a failure shows in ``rejects`` before an
upload instead of in an e-mail from the platform a day later. Writers and validators are pure:
records in, text or verdicts out; they run on the rows of one upload (the platforms take a few
thousand per request), already in memory for the writer, never on a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: the kinds of row an export sends: a new conversion, or an adjustment of one sent before
KINDS = ("conversion", "restatement", "retraction")


@dataclass(frozen=True)
class Conversion:
    """One conversion (or an adjustment of one) on its way to a platform.

    ``conversion_id`` is ``<conversion type>:<ref>`` (the touch or deal that converted): stable
    across runs, it is what the audit log remembers. ``converted_at`` and ``click_at`` are UTC.
    ``value`` is what the platform is told (a number; anything else is refused by the
    validators). ``email``/``phone`` are plain (the writers normalise and hash them);
    ``email_sha256``/``phone_sha256`` are digests a source gave instead. An adjustment
    (``kind`` restatement or retraction) repeats the original's identifiers and time, with the
    new ``value`` and ``adjusted_at``.
    """

    conversion_id: str
    name: str
    converted_at: datetime
    value: float | str | None
    currency: str | None
    order_id: str | None = None
    click_id: str | None = None
    click_id_param: str | None = None
    click_at: datetime | None = None
    email: str | None = None
    phone: str | None = None
    email_sha256: str | None = None
    phone_sha256: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    zip_code: str | None = None
    country: str | None = None
    journey_id: str | None = None
    kind: str = "conversion"
    adjusted_at: datetime | None = None


@dataclass(frozen=True)
class Rejection:
    """A record a validator refused: ``code`` is the platform's error name."""

    conversion: Conversion
    code: str
    field: str | None
    reason: str


@dataclass(frozen=True)
class Checked:
    """A validator's verdict: the records to send and the ones refused."""

    kept: list[Conversion]
    rejected: list[Rejection]


@dataclass(frozen=True)
class WriteOptions:
    """What a writer needs beyond the records (from the settings and the command line)."""

    time_zone: str = "UTC"
    phone_region: str = "US"
    google_ads_customer_id: str | None = None
    meta_action_source: str = "system_generated"


@dataclass(frozen=True)
class CheckOptions:
    """What a validator needs: the clock and the conversion window of the destination."""

    now: datetime
    window_days: int = 90


Writer = Callable[[Sequence[Conversion], WriteOptions], str]
Validator = Callable[[Sequence[Conversion], CheckOptions], Checked]


@dataclass(frozen=True)
class Format:
    """One file or payload layout of a destination, versioned: ``id`` names it in the audit
    log as ``<id>/v<version>``; a change of layout is a new version, never an edit."""

    id: str
    version: int
    destination: str
    suffix: str
    doc: str
    write: Writer
    validate: Validator
    #: click id parameters a record needs (none: the platform matches on people)
    clicks: tuple[str, ...] = ()
    #: the adjustments' own file layout (None: in the main file if ``adjusts_inline``, else the
    #: platform takes no adjustment)
    write_adjustments: Writer | None = None
    #: ``write`` itself takes adjustments beside the conversions (one file holds both)
    adjusts_inline: bool = False
    #: a JSON payload, which can be POSTed to a push URL
    pushable: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def versioned(self) -> str:
        return f"{self.id}/v{self.version}"

    @property
    def adjusts(self) -> bool:
        """Whether the destination takes restatements and retractions in this format."""
        return self.adjusts_inline or self.write_adjustments is not None


# ---- checks shared by the validators --------------------------------------------------------
def number(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a number (text, NaN, inf)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def known_currency(code: object) -> bool:
    """Whether ``code`` is an ISO 4217 currency, from the maintained ``pycountry`` list."""
    import pycountry

    return isinstance(code, str) and len(code) == 3 and code.isupper() and (
        pycountry.currencies.get(alpha_3=code) is not None)


Rule = Callable[[Conversion, CheckOptions], tuple[str, str | None, str] | None]


def run_rules(rows: Sequence[Conversion], options: CheckOptions, rules: Sequence[Rule], *,
              duplicate: Callable[[Conversion], object] | None = None,
              duplicate_code: str = "DUPLICATE") -> Checked:
    """Apply ``rules`` in order (the first failure names the record's reject), then refuse
    every later record whose ``duplicate`` key was already kept in this batch."""
    kept: list[Conversion] = []
    rejected: list[Rejection] = []
    seen: dict[object, str] = {}
    for row in rows:
        failure = next((f for f in (rule(row, options) for rule in rules) if f), None)
        if failure is None and duplicate is not None:
            key = duplicate(row)
            if key is not None and key in seen:
                failure = (duplicate_code, None, f"{key!r} is already in this upload "
                           f"(conversion {seen[key]})")
            elif key is not None:
                seen[key] = row.conversion_id
        if failure is None:
            kept.append(row)
        else:
            code, field_name, reason = failure
            rejected.append(Rejection(row, code, field_name, reason))
    return Checked(kept, rejected)


def older_than(at: datetime | None, now: datetime, days: float) -> bool:
    return at is not None and now - at > timedelta(days=days)
