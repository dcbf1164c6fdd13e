"""``export_conversions``: one export of one conversion type to one destination.

The steps: find the conversions (new ones, and adjustments of ones sent before) in the stored
tables (:mod:`touchline.exports.rows`), let the destination's validator refuse what the
platform would refuse (to ``rejects``), write the file, POST it when a push URL is configured,
and log the export (:mod:`touchline.exports.audit`). A conversion counts as delivered once its
file is written and, when a push is configured, the platform answered 2xx; only delivered
conversions enter ``exported_conversions``, so a failed push is retried by the next export and
no conversion goes twice to one destination unless as an adjustment.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ibis.backends import BaseBackend

from touchline.config import Settings
from touchline.errors import ConfigError, UnknownModelError, did_you_mean
from touchline.exports import audit, google_ads, meta, microsoft, rows
from touchline.exports.formats import (
    CheckOptions,
    Conversion,
    Format,
    Rejection,
    WriteOptions,
)

log = logging.getLogger(__name__)

#: destination → the click id parameters that are its clicks
DESTINATIONS: dict[str, tuple[str, ...]] = {
    google_ads.DESTINATION: google_ads.CLICK_PARAMS,
    meta.DESTINATION: ("fbclid",),
    microsoft.DESTINATION: ("msclkid",),
}
#: every format, by id; the first of a destination is its default
FORMATS: dict[str, Format] = {f.id: f for f in (
    *google_ads.FORMATS, *meta.FORMATS, *microsoft.FORMATS)}
PUSH_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class ExportResult:
    """What one export did."""

    export_id: str
    destination: str
    format: str
    path: Path
    adjustments_path: Path | None
    conversions: int
    adjustments: int
    rejected: int
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    push_status: int | None = None
    push_error: str | None = None


def formats_of(destination: str) -> list[Format]:
    """The formats of ``destination``, the default first."""
    if destination not in DESTINATIONS:
        raise ConfigError(f"unknown destination {destination!r}"
                          f"{did_you_mean(destination, DESTINATIONS)}: choose from "
                          f"{', '.join(DESTINATIONS)}")
    return [f for f in FORMATS.values() if f.destination == destination]


def choose_format(destination: str, name: str | None) -> Format:
    """The format ``name`` of ``destination`` (its id, or the id without the destination's
    prefix, e.g. ``leads-csv``), else the destination's default."""
    choices = formats_of(destination)
    if name is None:
        return choices[0]
    for f in choices:
        if name in (f.id, f.id.removeprefix(destination + "-"), f.id.split("-", 1)[-1]):
            return f
    ids = [f.id for f in choices]
    raise ConfigError(f"format {name!r}{did_you_mean(name, ids)} is not one of {destination}'s: "
                      f"{', '.join(ids)}")


def _conversions(table: Any, *, name: str, currency: str) -> list[Conversion]:
    """Records from a small result table (the rows of one upload)."""
    out = []
    for r in table.to_pyarrow().to_pylist():
        out.append(Conversion(
            conversion_id=r["conversion_id"], name=name, converted_at=r["converted_at"],
            value=r["value"], currency=r.get("currency") or currency, order_id=r["order_id"],
            click_id=r["click_id"], click_id_param=r["click_id_param"],
            click_at=r.get("click_at"), email=r.get("email"), phone=r.get("phone"),
            email_sha256=r.get("email_sha256"), phone_sha256=r.get("phone_sha256"),
            external_id=r.get("external_id"), journey_id=r["journey_id"],
            kind=r.get("kind", "conversion")))
    return out


#: why a conversion of a person without ad consent is not sent (``rejects.reason``)
NO_CONSENT_REASON = ("the person's latest consent (t.js context.consent) is not 'granted': no "
                     "upload to an ad platform")


def _consented(con: BaseBackend, records: list[Conversion], *, require: bool
               ) -> tuple[list[Conversion], list[Rejection]]:
    """``records`` split into those whose person consented and ``no_consent`` rejections
    (:func:`rows.refused_consent`), before any validator sees them."""
    persons = sorted({r.external_id for r in records if r.external_id})
    if not persons:
        return records, []
    refused_persons = rows.refused_consent(con, require=require)
    mine = refused_persons.filter(refused_persons.person_id.isin(persons))
    refused = set(mine.to_pyarrow().column("person_id").to_pylist())
    kept = [r for r in records if r.external_id not in refused]
    rejected = [Rejection(r, "no_consent", "consent", NO_CONSENT_REASON)
                for r in records if r.external_id in refused]
    return kept, rejected


#: why a people-matched conversion cannot go when contacts are keyed hashes at rest
PII_HASHED_REASON = ("e-mails and phones are stored as keyed hashes (pii_at_rest = 'hashed'); "
                     "the platform matches people on the SHA-256 of the plain normalised value, "
                     "which cannot be made from a keyed hash")


def _contacts_at_rest(records: list[Conversion], layout: Format, settings: Settings
                      ) -> tuple[list[Conversion], list[Rejection]]:
    """With ``pii_at_rest = "hashed"`` the stored contacts are keyed hashes, not what a
    platform's hashing rules take: they are never sent, and a layout that matches on people
    only (no click id: Google enhanced conversions for leads) refuses every record with
    ``pii_hashed_at_rest``. Plain at rest: ``records`` as they are."""
    if settings.pii_at_rest != "hashed":
        return records, []
    if not layout.clicks:
        return [], [Rejection(r, "pii_hashed_at_rest", "email", PII_HASHED_REASON)
                    for r in records]
    return [replace(r, email=None, phone=None, email_sha256=None, phone_sha256=None)
            for r in records], []


def _check_inputs(con: BaseBackend, settings: Settings, conversion: str,
                  model: str | None, fmt: Format) -> None:
    names = [c.name for c in settings.conversions]
    if conversion not in names:
        raise ConfigError(f"unknown conversion {conversion!r}{did_you_mean(conversion, names)}: "
                          f"choose from {', '.join(names)} (settings.conversions)")
    tables = set(con.list_tables())
    missing = [t for t in ("journeys", "journey_steps", "touches", "identities")
               if t not in tables]
    if missing:
        raise ConfigError(f"the warehouse has no {', '.join(missing)}: run `touchline run` "
                          "first")
    if "click_id_param" not in con.table("touches").columns:
        raise ConfigError("touches lack click_id_param (prepared by an older version): run "
                          "`touchline run` again")
    if model is not None and model not in settings.attribution_models:
        raise UnknownModelError(f"unknown model {model!r} for --model"
                                f"{did_you_mean(model, settings.attribution_models)}: credits "
                                f"are stored for {', '.join(settings.attribution_models)}")
    if fmt.id == "google-data-manager-json" and not settings.google_ads_customer_id:
        raise ConfigError("format google-data-manager-json needs google_ads_customer_id (the "
                          "Google Ads account that owns the conversion action) in the settings")


def push(url: str, payload: str) -> tuple[int | None, str]:
    """POST ``payload`` (JSON) to ``url``: the HTTP status and the answer (or the error)."""
    request = urllib.request.Request(url, data=payload.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT_SECONDS) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def export_conversions(con: BaseBackend, settings: Settings, *, destination: str,
                       conversion: str, out: Path, fmt: str | None = None,
                       platform_name: str | None = None, model: str | None = None,
                       since: datetime | None = None, now: datetime | None = None
                       ) -> ExportResult:
    """Export the conversions of type ``conversion`` not yet sent to ``destination`` (and the
    adjustments of those sent whose value changed) to ``out``; see the module.

    ``platform_name``: the conversion action / event / goal name on the platform (default:
    ``conversion``). ``model``: send the value that model credits to the destination's clicks
    instead of the conversion's own. ``now`` (UTC): the clock the validators use (``--as-of``;
    stored as ``exports.as_of``); ``exports.exported_at`` is always when the export ran.
    """
    layout = choose_format(destination, fmt)
    _check_inputs(con, settings, conversion, model, layout)
    audit.ensure_tables(con)
    ran_at = datetime.now(UTC).replace(tzinfo=None)
    as_of, now = now, now or ran_at
    name = platform_name or conversion
    currency = settings.reporting_currency
    params = DESTINATIONS[destination]
    current = rows.conversion_rows(con, conversion=conversion, params=params,
                                   require_click=bool(layout.clicks), model=model)
    sent = rows.sent_state(con, destination, conversion)
    fresh = _conversions(rows.new_conversions(current, sent, since).order_by("converted_at",
                                                                             "conversion_id"),
                         name=name, currency=currency)
    adjusted: list[Conversion] = []
    if layout.adjusts:
        adjusted = [replace(c, adjusted_at=now) for c in _conversions(
            rows.adjustments(current, sent).order_by("converted_at", "conversion_id"),
            name=name, currency=currency)]
    window = settings.export_conversion_window_days.get(destination, 90)
    allowed, refused = _consented(con, [*fresh, *adjusted],
                                  require=settings.export_require_consent)
    allowed, unhashable = _contacts_at_rest(allowed, layout, settings)
    checked = layout.validate(allowed, CheckOptions(now=now, window_days=window))
    checked = replace(checked, rejected=[*refused, *unhashable, *checked.rejected])
    kept_new = [c for c in checked.kept if c.kind == "conversion"]
    kept_adjusted = [c for c in checked.kept if c.kind != "conversion"]
    options = WriteOptions(time_zone=settings.export_time_zone,
                           phone_region=settings.phone_region,
                           google_ads_customer_id=settings.google_ads_customer_id,
                           meta_action_source=settings.meta_action_source)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = layout.write([*kept_new, *kept_adjusted] if layout.adjusts_inline else kept_new,
                           options)
    out.write_text(payload)
    adjustments_path = None
    if layout.write_adjustments is not None and kept_adjusted:
        adjustments_path = out.with_name(f"{out.stem}.adjustments{out.suffix}")
        adjustments_path.write_text(layout.write_adjustments(kept_adjusted, options))
    export_id = audit.new_export_id()
    url = settings.export_push_urls.get(destination)
    status, answer = None, None
    delivered: Sequence[Conversion] = [*kept_new, *kept_adjusted]
    if url and layout.pushable and kept_new:
        status, answer = push(url, payload)
        if status is None or not 200 <= status < 300:
            log.warning("push of export %s to %s failed (%s): nothing is marked sent",
                        export_id, audit.public_url(url), status)
            delivered = kept_adjusted  # written to their own file; not part of the push
    rejects = audit.reject_table(checked.rejected, destination=destination,
                                 format_id=layout.versioned, export_id=export_id, now=ran_at)
    audit.append_new_rejects(con, rejects)
    audit.record(con, audit.export_row(
        export_id=export_id, destination=destination, format_id=layout.versioned,
        conversion=conversion, platform_name=name,
        value_basis=f"model:{model}" if model else "value", since=since, exported_at=ran_at,
        as_of=as_of, conversion_count=sum(c.kind == "conversion" for c in delivered),
        adjustment_count=sum(c.kind != "conversion" for c in delivered),
        rejected_count=len(checked.rejected), path=str(out),
        adjustments_path=str(adjustments_path) if adjustments_path else None,
        push_url=url if status is not None or answer is not None else None,
        push_status=status, push_response=answer),
        audit.delivered_rows(delivered, export_id=export_id, destination=destination,
                             conversion=conversion, exported_at=ran_at))
    by_reason: dict[str, int] = {}
    for rejection in checked.rejected:
        by_reason[rejection.code] = by_reason.get(rejection.code, 0) + 1
    pushed_ok = status is not None and 200 <= status < 300
    return ExportResult(
        export_id=export_id, destination=destination, format=layout.versioned, path=out,
        adjustments_path=adjustments_path,
        conversions=sum(c.kind == "conversion" for c in delivered),
        adjustments=sum(c.kind != "conversion" for c in delivered),
        rejected=len(checked.rejected), rejects_by_reason=by_reason, push_status=status,
        push_error=None if (status is None and answer is None) or pushed_ok else answer)
