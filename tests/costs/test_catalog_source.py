"""Tests for the pure catalog source (no Django, no database).

Expected numbers are worked out by hand from the providers' published prices (per million
tokens, per minute, per 1,000 characters, per image) and divided down to one unit here, so a
wrong divisor or a unit mix-up fails. genai-prices is pinned (0.2.3) in pyproject.toml; the
package-derived figures below are that version's data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import types as gp
from genai_prices.data import providers as genai_providers

from costs.catalog._genai import clause_regex
from costs.catalog.source import (
    EPOCH,
    METERS,
    CatalogModel,
    load_catalog,
    load_extras,
    load_genai_prices,
    matches,
)

MILLION = Decimal(1_000_000)


@pytest.fixture(scope="module")
def catalog() -> list[CatalogModel]:
    return load_catalog()


@pytest.fixture(scope="module")
def by_key(catalog: list[CatalogModel]) -> dict[tuple[str, str], CatalogModel]:
    return {(model.provider, model.slug): model for model in catalog}


def current_rates(model: CatalogModel) -> dict[str, Decimal]:
    return model.prices[-1].rates


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extras.toml"
    path.write_text(text, encoding="utf-8")
    return path


VALID_ROW = """
[[models]]
provider = "acme"
provider_name = "Acme"
slug = "speaker-1"
name = "Speaker 1"
aliases = ["Speaker-1-Latest"]

[[models.prices]]
effective_from = 2024-05-01
source = "test"
{rates}
"""


# ------------------------------------------------------------------------------- big providers


def test_gpt_4o_is_priced_per_single_token(by_key):
    # OpenAI: gpt-4o $2.50 / 1M input, $10.00 / 1M output, $1.25 / 1M cached input.
    rates = current_rates(by_key[("openai", "gpt-4o")])
    assert rates["input_tokens"] == Decimal("2.50") / MILLION == Decimal("0.0000025")
    assert rates["output_tokens"] == Decimal("10.00") / MILLION == Decimal("0.00001")
    assert rates["cached_input_tokens"] == Decimal("0.00000125")


def test_gpt_4o_dated_snapshot_resolves_to_gpt_4o(by_key):
    gpt_4o = by_key[("openai", "gpt-4o")]
    assert matches(gpt_4o, "gpt-4o")
    assert matches(gpt_4o, "gpt-4o-2024-08-06")
    assert matches(gpt_4o, "GPT-4o-2024-11-20")  # case-insensitive like genai-prices
    assert not matches(gpt_4o, "gpt-4o-mini")
    assert not matches(gpt_4o, "gpt-4o-2024-08-06-extra")


def test_gpt_4o_mini_exists(by_key):
    # $0.15 / 1M input, $0.60 / 1M output.
    rates = current_rates(by_key[("openai", "gpt-4o-mini")])
    assert rates["input_tokens"] == Decimal("0.00000015")
    assert rates["output_tokens"] == Decimal("0.0000006")


def test_matches_uses_prefixes_where_genai_prices_uses_starts_with(by_key):
    sonnet = by_key[("anthropic", "claude-sonnet-4-5")]
    assert "claude-sonnet-4-5" in sonnet.match_prefixes
    assert matches(sonnet, "claude-sonnet-4-5-20250929")
    assert not matches(sonnet, "claude-sonnet-4-6")


def test_matches_uses_an_equivalent_fullmatch_regex_for_and_clauses(by_key):
    # genai-prices: starts_with "gemini-2.5-pro" AND NOT a "-tts" model.
    pro = by_key[("google", "gemini-2.5-pro")]
    assert pro.match_regexes and not pro.match_prefixes
    assert matches(pro, "gemini-2.5-pro")
    assert matches(pro, "gemini-2.5-pro-preview-06-05")
    assert not matches(pro, "gemini-2.5-pro-preview-tts")
    assert not matches(pro, "gemini-2.5-flash")


def test_gemini_25_pro_has_a_200k_cliff_tier_with_doubled_input_rate(by_key):
    # Google: $1.25 / 1M input up to 200k prompt tokens, $2.50 above; output $10 -> $15.
    price = by_key[("google", "gemini-2.5-pro")].prices[-1]
    assert price.rates["input_tokens"] == Decimal("0.00000125")
    assert price.rates["output_tokens"] == Decimal("0.00001")
    (tier,) = price.tiers
    assert tier.threshold == 200_000
    assert tier.rates["input_tokens"] == 2 * price.rates["input_tokens"] == Decimal("0.0000025")
    assert tier.rates["output_tokens"] == Decimal("0.000015")


def test_gemini_25_flash_exists(by_key):
    # $0.30 / 1M input, $2.50 / 1M output.
    rates = current_rates(by_key[("google", "gemini-2.5-flash")])
    assert rates["input_tokens"] == Decimal("0.0000003")
    assert rates["output_tokens"] == Decimal("0.0000025")


def test_big_providers_exist_with_one_display_name_each(catalog):
    names: dict[str, set[str]] = {}
    for model in catalog:
        names.setdefault(model.provider, set()).add(model.provider_name)
    for provider in ("openai", "anthropic", "google", "groq", "elevenlabs", "novita"):
        assert provider in names
    assert {p: n for p, n in names.items() if len(n) != 1} == {}


# ------------------------------------------------------------------------------- price history


def test_genai_price_history_becomes_several_prices_sorted_by_effective_from(by_key):
    # deepseek-v4-flash in genai-prices 0.2.3: base $0.14/M input, from 2026-08-17 $0.22/M,
    # from 2026-09-10 $0.15/M, plus two time-of-day windows that we drop.
    prices = by_key[("deepseek", "deepseek-v4-flash")].prices
    assert [p.effective_from for p in prices] == [
        EPOCH,
        datetime(2026, 8, 17, tzinfo=UTC),
        datetime(2026, 9, 10, tzinfo=UTC),
    ]
    assert [p.rates["input_tokens"] for p in prices] == [
        Decimal("0.00000014"),
        Decimal("0.00000022"),
        Decimal("0.00000015"),
    ]


def test_time_of_day_prices_are_dropped_and_the_unconstrained_one_kept(by_key):
    # deepseek-chat: unconstrained $0.135/M input; the 00:30-16:30 UTC window ($0.27/M) is dropped.
    (price,) = by_key[("deepseek", "deepseek-chat")].prices
    assert price.rates["input_tokens"] == Decimal("0.000000135")


def test_every_model_has_sorted_aware_prices_with_known_meters_only(catalog):
    for model in catalog:
        assert model.prices, model
        starts = [price.effective_from for price in model.prices]
        assert starts == sorted(starts) and len(set(starts)) == len(starts), model.slug
        for price in model.prices:
            assert price.effective_from.utcoffset() is not None
            assert price.source
            assert price.rates and set(price.rates) <= set(METERS), (model.slug, price.rates)
            thresholds = [tier.threshold for tier in price.tiers]
            assert thresholds == sorted(set(thresholds))
            for tier in price.tiers:
                assert type(tier.threshold) is int
                assert tier.rates and set(tier.rates) <= set(METERS)


def test_genai_models_start_at_epoch(catalog):
    genai = {(m.provider, m.slug) for m in load_genai_prices()}
    firsts = {m.prices[0].effective_from for m in catalog if (m.provider, m.slug) in genai}
    assert EPOCH in firsts


def test_rates_are_all_decimal_never_floats(catalog):
    for model in catalog:
        for price in model.prices:
            values = list(price.rates.values())
            values += [rate for tier in price.tiers for rate in tier.rates.values()]
            for value in values:
                assert type(value) is Decimal, (model.slug, value)
                assert value.is_finite() and value >= 0


def test_genai_model_with_an_empty_price_is_free(by_key):
    # genai-prices gives GitHub Copilot's gpt-4o an empty price: $0 for any usage.
    rates = current_rates(by_key[("github-copilot", "gpt-4o")])
    assert rates == {"input_tokens": Decimal(0), "output_tokens": Decimal(0)}


def test_genai_model_priced_only_by_pages_is_skipped_not_free(by_key):
    assert ("mistral", "mistral-ocr-latest") not in by_key


# ------------------------------------------------------------------------------- catalog shape


def test_load_catalog_is_deterministic():
    assert load_catalog() == load_catalog()


def test_provider_and_slug_are_unique(catalog):
    keys = [(model.provider, model.slug) for model in catalog]
    assert len(keys) == len(set(keys))


def test_every_genai_model_still_matches_what_it_matched_before():
    """Compare genai-prices' own clause with ``matches`` on names built from the clauses."""

    def literals(clause: object) -> set[str]:
        found = {getattr(clause, a) for a in ("equals", "starts_with", "ends_with", "contains")
                 if hasattr(clause, a)}  # fmt: skip
        for branch in [*getattr(clause, "or_", []), *getattr(clause, "and_", [])]:
            found |= literals(branch)
        return found

    rows = {(m.provider, m.slug): m for m in load_genai_prices()}
    checked = 0
    for provider in genai_providers:
        for info in provider.models:
            row = rows.get((provider.id, info.id))
            if row is None:
                continue  # the six per-page OCR models
            names = {info.id}
            for literal in literals(info.match):
                names |= {literal, literal.upper(), f"{literal}-2025-01-01", f"{literal}-tts",
                          f"x{literal}", literal[:-1]}  # fmt: skip
            for name in names:
                expected = info.is_match(name)
                # The slug always matches in our catalog; genai-prices' clause may omit it.
                assert matches(row, name) == expected or name.lower() == info.id.lower(), (
                    provider.id,
                    info.id,
                    name,
                )
                checked += 1
    assert checked > 10_000


def test_all_regexes_compile(catalog):
    for model in catalog:
        for regex in model.match_regexes:
            re.compile(regex)


@pytest.mark.parametrize(
    ("clause", "name", "expected"),
    [
        (
            gp.ClauseAnd(and_=[gp.ClauseContains("mini"), gp.ClauseContains("tts")]),
            "a-mini-tts",
            True,
        ),
        (gp.ClauseAnd(and_=[gp.ClauseContains("mini"), gp.ClauseContains("tts")]), "a-mini", False),
        (gp.ClauseStartsWith("gpt-4.1"), "gpt-4x1-nano", False),  # "." is a literal
        (gp.ClauseEndsWith(":free"), "llama:free", True),
        (gp.ClauseRegex("^a|b"), "xxbxx", True),  # re.search semantics, top-level alternation
        (gp.ClauseRegex("^a|b"), "xa", False),
        (gp.ClauseRegex("^o[134]"), "o3-mini", True),
        (gp.ClauseRegex("^o[134]"), "gpt-o3", False),
        (gp.ClauseRegex(r"^grok-4\.3-\d{8}$"), "grok-4.3-20250101", True),
        (gp.ClauseRegex(r"^grok-4\.3-\d{8}$"), "grok-4.3-20250101-x", False),
    ],
)
def test_clause_regex_fullmatch_is_equivalent_to_the_clause(clause, name, expected):
    assert clause.is_match(name) is expected
    assert bool(re.fullmatch(clause_regex(clause), name)) is expected


# ------------------------------------------------------------------------------- our extras


def test_elevenlabs_voices_cost_0_0003_per_character(by_key):
    # $0.30 per 1,000 characters = 0.30 / 1000 = $0.0003 per character.
    for slug in ("eleven_multilingual_v2", "eleven_turbo_v2_5", "eleven_flash_v2_5"):
        model = by_key[("elevenlabs", slug)]
        assert current_rates(model) == {"characters": Decimal("0.0003")}
        assert model.provider_name == "ElevenLabs"


def test_whisper_1_costs_0_0001_per_audio_second(by_key):
    # $0.006 per minute = 0.006 / 60 = $0.0001 per second (genai-prices: $0.36 / hour).
    assert current_rates(by_key[("openai", "whisper-1")]) == {"audio_seconds": Decimal("0.0001")}


def test_tts_models_are_priced_per_character(by_key):
    # tts-1 $15 / 1M characters = $0.000015; tts-1-hd $30 / 1M = $0.00003 per character.
    assert current_rates(by_key[("openai", "tts-1")]) == {"characters": Decimal("0.000015")}
    assert current_rates(by_key[("openai", "tts-1-hd")]) == {"characters": Decimal("0.00003")}


def test_openai_image_models_are_priced_per_image(by_key):
    # DALL-E 3 standard 1024x1024 $0.04, HD $0.08; DALL-E 2 $0.02; gpt-image-1 medium $0.042.
    assert current_rates(by_key[("openai", "dall-e-3")]) == {"images": Decimal("0.04")}
    assert current_rates(by_key[("openai", "dall-e-3-hd")]) == {"images": Decimal("0.08")}
    assert current_rates(by_key[("openai", "dall-e-2")]) == {"images": Decimal("0.02")}
    assert current_rates(by_key[("openai", "gpt-image-1")]) == {"images": Decimal("0.042")}


def test_nano_banana_images_cost_0_02_each_and_keep_genai_names(by_key):
    model = by_key[("google", "gemini-2.5-flash-image")]
    assert current_rates(model) == {"images": Decimal("0.02")}
    for name in ("nano-banana", "gemini-2.5-flash-image", "gemini-2.5-flash-image-preview"):
        assert matches(model, name)


def test_image_providers_from_extras(by_key):
    assert current_rates(by_key[("stability", "stable-diffusion-xl")]) == {
        "images": Decimal("0.003")
    }
    assert matches(by_key[("stability", "stable-diffusion-xl")], "stable-diffusion-xl-1024-v1-0")
    # FLUX1.1 [pro]: 4 credits at $0.01.
    assert current_rates(by_key[("bfl", "flux-pro-1.1")]) == {"images": Decimal("0.04")}


def test_extra_overriding_a_genai_model_replaces_prices_and_adds_aliases(by_key):
    # Novita Llama 3.1 8B: $0.10 / 1M tokens in and out = $0.0000001 per token.
    model = by_key[("novita", "meta-llama/llama-3.1-8b-instruct")]
    (price,) = model.prices
    assert price.rates == {"input_tokens": Decimal("1E-7"), "output_tokens": Decimal("1E-7")}
    assert matches(model, "llama-3.1-8b")  # our alias
    assert matches(model, "meta-llama/llama-3.1-8b-instruct-max")  # genai-prices' alias


def test_groq_free_tier_is_a_zero_priced_provider(by_key):
    model = by_key[("groq-free", "llama-3.1-8b-instant")]
    assert current_rates(model) == {"input_tokens": Decimal(0), "output_tokens": Decimal(0)}
    assert current_rates(by_key[("groq", "llama-3.1-8b-instant")])["input_tokens"] > 0


def test_load_extras_converts_human_units_to_single_units(tmp_path):
    path = write_toml(
        tmp_path,
        VALID_ROW.format(rates='per_minute = "0.006"\nper_1k_characters = "0.30"')
        + '\n[[models.prices.tiers]]\nthreshold = 1000\nper_1m_characters = "600"\n',
    )
    (model,) = load_extras(path)
    (price,) = model.prices
    # 0.006 / 60 = 0.0001 per second; 0.30 / 1000 = 0.0003 per char; 600 / 1M = 0.0006.
    assert price.rates == {"audio_seconds": Decimal("0.0001"), "characters": Decimal("0.0003")}
    assert price.tiers[0].threshold == 1000
    assert price.tiers[0].rates == {"characters": Decimal("0.0006")}
    assert price.effective_from == datetime(2024, 5, 1, tzinfo=UTC)
    assert model.aliases == ("speaker-1-latest",)


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ('per_imgae = "0.04"', "unknown key(s) per_imgae"),
        ("per_image = 0.04", "floats are inexact"),
        ('per_image = "-1"', "non-negative"),
        ('per_image = "abc"', "is not a number"),
        ("", "no rate"),
        ('per_minute = "1"\nper_second = "1"', "more than one key"),
    ],
)
def test_bad_extras_rows_raise_value_error_naming_the_row(tmp_path, rates, message):
    path = write_toml(tmp_path, VALID_ROW.format(rates=rates))
    with pytest.raises(ValueError, match=re.escape(message)) as excinfo:
        load_extras(path)
    assert "models[0] (acme/speaker-1)" in str(excinfo.value)


def test_unknown_model_key_raises(tmp_path):
    text = VALID_ROW.format(rates='per_image = "1"').replace("\nname = ", "\nnmae = ")
    with pytest.raises(ValueError, match=r"models\[0\] \(acme/speaker-1\).*unknown key\(s\) nmae"):
        load_extras(write_toml(tmp_path, text))


def test_duplicate_extras_rows_raise(tmp_path):
    row = VALID_ROW.format(rates='per_image = "1"')
    with pytest.raises(ValueError, match="duplicate"):
        load_extras(write_toml(tmp_path, row + row))


def test_shipped_extras_file_loads(by_key):
    extras = load_extras()
    assert len(extras) >= 15
    for model in extras:
        assert by_key[(model.provider, model.slug)].prices == model.prices
