"""Writes of the AI-cost domain."""

from __future__ import annotations

from costs.services.ingest import EventInput, EventResult, usage_record
from costs.services.rollups import rollup_add

__all__ = ["EventInput", "EventResult", "rollup_add", "usage_record"]
