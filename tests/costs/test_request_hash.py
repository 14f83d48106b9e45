"""Event fingerprints (replay detection) are the canonical JSON form's hash,
whichever encoder writes it: a replay recorded before must still match."""

from __future__ import annotations

import hashlib
import json
import random
from decimal import Decimal

import pytest

from costs.api.schemas import request_hash


def canonical(raw) -> str:
    """The canonical form, spelled out: sorted keys, compact, ASCII, Decimals as strings."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


BODIES = [
    {"idempotency_key": "k", "provider": "openai", "usage": {"input_tokens": 1}},
    {"b": 1, "a": {"d": [1, None, True], "c": "x"}},
    {"s": 'quote " backslash \\ slash / newline \n tab \t bell \x07 nul-ish \x1f'},
    {"del": "a\x7fb"},
    {"accent": "café", "cjk": "東京", "emoji": "🙂", "sep": "\u2028"},
    {"cost": Decimal("0.000012"), "exp": Decimal("1E+5")},
    {"huge": 2**70, "max": 2**64 - 1, "min": -(2**63)},
    {"é-key": 1, "a-key": 2},
    {"nested": [[[[{"x": [1]}]]]]},
    {},
]


@pytest.mark.parametrize("raw", BODIES, ids=range(len(BODIES)))
def test_request_hash_is_the_canonical_forms_hash(raw):
    assert request_hash(raw) == canonical(raw)


def test_request_hash_matches_on_random_bodies():
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0, 0x80)] + ["é", "ß", "東", "\u2028", "🙂"]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    def value(depth: int):
        kind = rng.randint(0, 6 if depth < 3 else 3)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.randint(-(2**66), 2**66)
        if kind == 2:
            return Decimal(rng.randint(0, 10**9)) / 10 ** rng.randint(0, 12)
        if kind == 3:
            return rng.choice([True, False, None])
        if kind == 4:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {text(): value(depth + 1) for _ in range(rng.randint(0, 4))}

    for _ in range(2000):
        raw = {text(): value(0) for _ in range(rng.randint(1, 5))}
        assert request_hash(raw) == canonical(raw), raw


def test_key_order_does_not_change_the_fingerprint():
    assert request_hash({"a": 1, "b": {"x": 1, "y": 2}}) == request_hash(
        {"b": {"y": 2, "x": 1}, "a": 1}
    )
