"""Writes of the AI-cost domain."""

from __future__ import annotations

from costs.services.catalog import catalog_sync, price_is_used
from costs.services.ingest import EventInput, EventResult, usage_record
from costs.services.preflight import Preflight, preflight_check
from costs.services.reprice import usage_reprice

__all__ = [
    "EventInput",
    "EventResult",
    "Preflight",
    "catalog_sync",
    "preflight_check",
    "price_is_used",
    "usage_record",
    "usage_reprice",
]
