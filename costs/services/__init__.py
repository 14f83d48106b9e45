"""Writes of the AI-cost domain."""

from __future__ import annotations

from costs.services.catalog import catalog_sync, price_is_used
from costs.services.ingest import EventInput, EventResult, usage_record
from costs.services.preflight import Preflight, preflight_check
from costs.services.reprice import usage_reprice
from costs.services.rollups import rollup_add

__all__ = [
    "EventInput",
    "EventResult",
    "Preflight",
    "catalog_sync",
    "preflight_check",
    "price_is_used",
    "rollup_add",
    "usage_record",
    "usage_reprice",
]
