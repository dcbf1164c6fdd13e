"""Privacy: erase a person everywhere (:mod:`~touchline.privacy.erase`), delete raw events
past their retention (:mod:`~touchline.privacy.retention`). docs/privacy.md.

Reads and rewrites the stored tables, the collector's spool and its lease store; never the
stages' code.
"""

from __future__ import annotations

from touchline.privacy.erase import ERASE_KINDS, Erasure, erase
from touchline.privacy.retention import apply_retention

__all__ = ["ERASE_KINDS", "Erasure", "apply_retention", "erase"]
