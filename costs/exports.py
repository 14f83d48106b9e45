"""Rendering ledger rows for exports (API and admin), streamed row by row."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from django.db.models import QuerySet

from costs.models import UsageEvent
from costs.pricing.engine import METERS

if TYPE_CHECKING:
    from profiles.models import Profile

EXPORT_FIELDS = [
    "id",
    "occurred_at",
    "received_at",
    "profile",
    "provider",
    "model",
    "model_requested",
    "operation",
    *METERS,
    "cost",
    "priced",
    "price_id",
    "revenue",
    "idempotency_key",
    "tags",
]


def export_row(event: UsageEvent) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "occurred_at": event.occurred_at.isoformat(),
        "received_at": event.received_at.isoformat(),
        # profile_id set: the profile is there.
        "profile": cast("Profile", event.profile).external_id if event.profile_id else None,
        "provider": event.provider,
        "model": event.model,
        "model_requested": event.model_requested,
        "operation": event.operation,
        **{
            m: str(getattr(event, m)) if m == "audio_seconds" else getattr(event, m) for m in METERS
        },
        "cost": f"{event.cost:.12f}",
        "priced": event.priced,
        "price_id": str(event.price_id) if event.price_id else None,
        "revenue": f"{event.revenue:.12f}" if event.revenue is not None else None,
        "idempotency_key": event.idempotency_key,
        "tags": event.tags,
    }


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_rows(events: QuerySet[UsageEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for event in events.iterator(chunk_size=2000):
        row = export_row(event)
        row["tags"] = json.dumps(row["tags"], sort_keys=True)
        yield writer.writerow([row[f] for f in EXPORT_FIELDS])


def json_rows(events: QuerySet[UsageEvent]) -> Iterator[str]:
    yield "["
    first = True
    for event in events.iterator(chunk_size=2000):
        yield ("" if first else ",\n") + json.dumps(export_row(event))
        first = False
    yield "]\n"
