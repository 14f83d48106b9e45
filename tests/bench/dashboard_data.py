"""Bulk loader of the dashboard benchmark's data set: N ledger events of one
organization spread evenly over the 120 days up to the load, across 50
profiles (skewed: a few heavy spenders), 3 providers and 8 models with their
natural operations, priced exactly by the catalog's pricing engine.

The events go straight into ``costs_usageevent`` with COPY; the matching
``costs_dailyusage`` rows are computed from them by one INSERT ... SELECT ...
GROUP BY, so the rollups equal the ledger by construction. A marker row in
``bench_dataset`` records what was loaded (one data set per size, organization
``bench-dash-<events>``), so later runs reuse it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

MARKER_TABLE = "bench_dataset"
SLUG_PREFIX = "bench-dash-"


def dataset_name(events: int) -> str:
    """One data set per size, so a full-size run does not evict the default one."""
    return f"{SLUG_PREFIX}{events}"


DAYS = 120
PROFILES = 50

# (provider, model as the client sends it, catalog slug, operation, weight, usage maker)
_CHAT = "chat"
MIX = [
    ("openai", "gpt-4o-2024-08-06", "gpt-4o", _CHAT, 18),
    ("openai", "gpt-4o-mini", "gpt-4o-mini", _CHAT, 30),
    ("openai", "tts-1", "tts-1", "tts", 5),
    ("openai", "dall-e-3", "dall-e-3", "image", 3),
    ("openai", "whisper-1", "whisper-1", "transcription", 4),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5", _CHAT, 22),
    ("google", "gemini-2.5-pro", "gemini-2.5-pro", _CHAT, 6),
    ("google", "gemini-2.5-flash", "gemini-2.5-flash", _CHAT, 12),
]
VARIANTS = 256  # priced usage shapes per model, drawn at random per event

COUNT_COLUMNS = [
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
    "input_audio_tokens", "output_audio_tokens", "characters", "images", "requests",
]  # fmt: skip
VARIANT_COLUMNS = [
    "provider", "model", "model_requested", "operation", *COUNT_COLUMNS, "audio_seconds",
    "cost", "cost_breakdown", "client_cost", "revenue", "priced", "reservation_id",
    "ai_model_id", "price_id",
]  # fmt: skip
ROW_COLUMNS = [
    "id", "idempotency_key", "request_hash", "occurred_at", "received_at", "day",
    "organization_id", "profile_id", "api_key_id", "tags", *VARIANT_COLUMNS,
]  # fmt: skip


def _usage(operation: str, rnd: random.Random) -> dict[str, object]:
    if operation == _CHAT:
        usage = {"input_tokens": rnd.randint(200, 6000), "output_tokens": rnd.randint(30, 1500)}
        if rnd.random() < 0.3:
            usage["cached_input_tokens"] = rnd.randint(0, usage["input_tokens"] // 2)
        return usage
    if operation == "tts":
        return {"characters": rnd.randint(100, 4000)}
    if operation == "image":
        return {"images": rnd.choice([1, 1, 1, 2, 4])}
    return {"audio_seconds": rnd.randint(5, 900)}  # transcription


@dataclass
class LoadInfo:
    org_id: uuid.UUID
    events: int
    loaded_at: datetime
    seconds: float
    reused: bool


def ensure_marker_table(conn: psycopg.Connection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (name text PRIMARY KEY, org_id uuid NOT NULL,"
        " events bigint NOT NULL, loaded_at timestamptz NOT NULL, seconds double precision)"
    )


def find(conn: psycopg.Connection, events: int) -> LoadInfo | None:
    """The loaded data set if it has ``events`` events and its organization exists."""
    ensure_marker_table(conn)
    row = conn.execute(
        f"SELECT m.org_id, m.events, m.loaded_at, m.seconds FROM {MARKER_TABLE} m"
        " JOIN profiles_organization o ON o.id = m.org_id WHERE m.name = %s",
        [dataset_name(events)],
    ).fetchone()
    if row is None or row[1] != events:
        return None
    return LoadInfo(row[0], row[1], row[2], row[3] or 0.0, reused=True)


def _variants(org, slug_models: dict[tuple[str, str], object], rnd: random.Random):
    """Per model: VARIANTS pre-rendered COPY fragments of the variant columns,
    each priced by the real engine at the price in force now."""
    from costs.pricing.engine import price_usage
    from costs.selectors.catalog import price_book

    now = datetime.now(UTC)
    book = price_book(org=org, model_ids=[m.pk for m in slug_models.values()])
    out = []
    for provider, sent, slug, operation, weight in MIX:
        model = slug_models[(provider, slug)]
        price = book.at(model.pk, now)
        frags = []
        for _ in range(VARIANTS):
            usage = _usage(operation, rnd)
            priced = price_usage(price.rates, usage)
            breakdown = json.dumps({k: str(v) for k, v in priced.lines.items()})
            counts = [str(usage.get(c, 0)) for c in COUNT_COLUMNS]
            revenue = "\\N" if rnd.random() < 0.5 else f"{priced.total * 2:.12f}"
            frags.append(
                "\t".join(
                    [
                        provider,
                        slug,
                        sent,
                        operation,
                        *counts,
                        str(usage.get("audio_seconds", 0)),
                        f"{priced.total:.12f}",
                        breakdown,
                        "\\N",
                        revenue,
                        "t",
                        "\\N",
                        str(model.pk),
                        str(price.id),
                    ]  # fmt: skip
                )
            )
        out.append((weight, frags))
    return out


def load(*, conninfo: dict, org, profile_ids: list[uuid.UUID], events: int,
         progress=print) -> LoadInfo:  # fmt: skip
    """COPY ``events`` events of ``org`` into the ledger and roll them up."""
    from costs.models import AIModel

    rnd = random.Random(20261122)
    slug_models = {
        (m.provider.slug, m.slug): m
        for m in AIModel.objects.select_related("provider").filter(
            slug__in=[slug for _, _, slug, _, _ in MIX]
        )
    }
    variants = _variants(org, slug_models, rnd)
    weights = [w for w, _ in variants]
    frag_lists = [f for _, f in variants]
    # A few heavy spenders: profile i drawn with weight 1/(i+1).
    profile_weights = [1 / (i + 1) for i in range(len(profile_ids))]
    profile_texts = [str(p) for p in profile_ids]
    sessions = [json.dumps({"session_id": f"s-{i}", "feature": f"f-{i % 7}"}) for i in range(997)]

    t0 = time.perf_counter()
    loaded_at = datetime.now(UTC).replace(microsecond=0)
    start = loaded_at - timedelta(days=DAYS)
    span = DAYS * 86400
    step = span / events
    org_text = str(org.pk)
    run = uuid.uuid4().hex[:8]
    id_base = uuid.uuid4().int & ~((1 << 40) - 1)
    received = loaded_at.isoformat()
    hash_text = "0" * 64
    chunk = 20_000
    columns = ", ".join(ROW_COLUMNS)
    with psycopg.connect(**conninfo) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY costs_usageevent ({columns}) FROM STDIN") as cp:
            for first in range(0, events, chunk):
                n = min(chunk, events - first)
                models = rnd.choices(range(len(frag_lists)), weights=weights, k=n)
                profiles = rnd.choices(profile_texts, weights=profile_weights, k=n)
                lines = []
                for j in range(n):
                    i = first + j
                    moment = start + timedelta(seconds=i * step)
                    lines.append(
                        f"{id_base + i:032x}\tdash-{run}-{i}\t{hash_text}\t{moment.isoformat()}\t"
                        f"{received}\t{moment.date().isoformat()}\t{org_text}\t{profiles[j]}\t\\N\t"
                        f"{sessions[i % 997]}\t{rnd.choice(frag_lists[models[j]])}\n"
                    )
                cp.write("".join(lines))
                if first and first % 1_000_000 == 0:
                    progress(f"dashboard data: {first:,} events copied")
        _rollup(conn, org.pk)
        conn.commit()
        conn.execute("ANALYZE costs_usageevent")
        conn.execute("ANALYZE costs_dailyusage")
        seconds = time.perf_counter() - t0
        ensure_marker_table(conn)
        conn.execute(
            f"INSERT INTO {MARKER_TABLE} (name, org_id, events, loaded_at, seconds)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET org_id = EXCLUDED.org_id,"
            " events = EXCLUDED.events, loaded_at = EXCLUDED.loaded_at, seconds = EXCLUDED.seconds",
            [dataset_name(events), org.pk, events, loaded_at, seconds],
        )
        conn.commit()
    return LoadInfo(org.pk, events, loaded_at, seconds, reused=False)


def _rollup(conn: psycopg.Connection, org_id: uuid.UUID) -> None:
    sums = [*COUNT_COLUMNS, "audio_seconds", "cost"]
    conn.execute(
        "INSERT INTO costs_dailyusage (organization_id, day, profile_id, provider, model,"
        f" operation, events, unpriced_events, {', '.join(sums)}, revenue)"
        " SELECT organization_id, day, profile_id, provider, model, operation, count(*),"
        f" count(*) FILTER (WHERE NOT priced), {', '.join(f'sum({c})' for c in sums)},"
        " coalesce(sum(revenue), 0) FROM costs_usageevent WHERE organization_id = %s"
        " GROUP BY organization_id, day, profile_id, provider, model, operation",
        [org_id],
    )
