"""Privacy: erase a person everywhere (:mod:`~touchline.privacy.erase`), delete or empty raw
data past its retention (:mod:`~touchline.privacy.retention`), key the contacts of rows loaded
before ``pii_at_rest = "hashed"`` (:mod:`~touchline.privacy.rehash`). docs/privacy.md. What loads
store at rest (keyed e-mails, phones, IPs) is the loads' own: :mod:`touchline.collect.at_rest`.

Reads and rewrites the stored tables, the collector's spool and its lease store; never the
stages' code.
"""

from __future__ import annotations

from touchline.privacy.erase import ERASE_KINDS, Erasure, erase
from touchline.privacy.rehash import rehash
from touchline.privacy.retention import apply_retention

__all__ = ["ERASE_KINDS", "Erasure", "apply_retention", "erase", "rehash"]
