"""HMAC-SHA256 request signatures, one scheme for both directions: webhooks the collector
receives (:mod:`touchline.collect.webhooks`) and lead payloads touchline sends to a CRM
(:mod:`touchline.exports.crm_push`).

The header is ``X-Touchline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." +
body>`` (the layout Stripe made familiar). The timestamp is inside the signed bytes, so it
cannot be moved to replay an old body; a receiver refuses a timestamp far from its clock.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Touchline-Signature"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Touchline-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds).

    >>> sign(b"s3cret", b'{"a":1}', 1700000000)[:16]
    't=1700000000,v1='
    """
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def parse_signature(header: str) -> tuple[int, str] | None:
    """``(timestamp, hex digest)`` of a header value, or ``None`` when it is malformed."""
    parts = dict(item.partition("=")[::2] for item in header.split(","))
    timestamp, given = parts.get("t", "").strip(), parts.get("v1", "").strip()
    if not timestamp.isdigit() or not given:
        return None
    return int(timestamp), given


def matches(secret: bytes, body: bytes, timestamp: int, given: str) -> bool:
    """Whether ``given`` is the signature of ``body`` at ``timestamp``; constant-time
    (``hmac.compare_digest``), so response times reveal nothing of the expected digest."""
    expected = sign(secret, body, timestamp).partition("v1=")[2]
    return hmac.compare_digest(expected.encode(), given.encode())
