"""touchline: self-hosted customer-journey tracking and multi-touch attribution."""

from __future__ import annotations

from touchline.config import Settings, load_settings
from touchline.engine import connect

__all__ = ["Settings", "connect", "load_settings"]
__version__ = "0.1.0"
