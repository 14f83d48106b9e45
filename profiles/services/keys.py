"""API keys: issuing, revoking and authenticating them, also while the
database is down."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.rows import RowReader, fetch
from profiles.models import (
    ApiKey,
    Organization,
    Profile,
)

KEY_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
KEY_PREFIX_LENGTH = 10
# Refresh last_used_at at most this often: a write on every request would cost
# the hot path a round trip for a figure nobody reads to the second.
logger = logging.getLogger(__name__)

LAST_USED_GRANULARITY = timedelta(minutes=1)
VALID_SCOPES = frozenset(ApiKey.Scope.values)


def hash_secret(secret: str) -> str:
    """SHA-256 of a key secret. The secret has 256 bits of entropy, so a fast
    hash is safe here (no dictionary to attack) and keeps authentication cheap."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(raw: str | list[str]) -> list[str]:
    """Validate a scope list (comma-separated string or list); unknown scopes raise."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = [s.strip() for s in items if s.strip()]
    unknown = sorted(set(scopes) - VALID_SCOPES)
    if unknown:
        raise ValidationError(
            {
                "scopes": f"Unknown scope(s): {', '.join(unknown)}. Valid: {', '.join(sorted(VALID_SCOPES))}."
            }
        )
    if not scopes:
        raise ValidationError({"scopes": "At least one scope is required."})
    # Keep the contract's order so listings read the same everywhere.
    return [s for s in ApiKey.Scope.values if s in scopes]


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the full "sk_<prefix>_<secret>", shown once and never stored


def api_key_create(
    *,
    org: Organization,
    name: str,
    scopes: str | list[str],
    profile: Profile | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey:
    """Issue a key. Only the prefix and the secret's hash are stored; the returned
    plaintext is the only copy there will ever be."""
    scope_list = parse_scopes(scopes)
    if profile is not None and profile.organization_id != org.pk:
        raise ValidationError({"profile": "The profile belongs to another organization."})
    secret = secrets.token_urlsafe(32)
    for _ in range(5):
        prefix = "".join(secrets.choice(KEY_PREFIX_ALPHABET) for _ in range(KEY_PREFIX_LENGTH))
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    organization=org,
                    profile=profile,
                    name=name or "API key",
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    scopes=scope_list,
                    expires_at=expires_at,
                )
            return IssuedKey(api_key=key, secret=f"sk_{prefix}_{secret}")
        except IntegrityError:  # prefix collision: astronomically rare, try another
            continue
    raise RuntimeError("Could not allocate a unique key prefix.")


def api_key_prepare(*, key: ApiKey) -> str:
    """Fill prefix and hash on an unsaved key (the admin's add form) and return the
    plaintext to show once."""
    secret = secrets.token_urlsafe(32)
    key.prefix = "".join(secrets.choice(KEY_PREFIX_ALPHABET) for _ in range(KEY_PREFIX_LENGTH))
    key.secret_hash = hash_secret(secret)
    return f"sk_{key.prefix}_{secret}"


def api_key_revoke(*, key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    _forget_for_outages(key)


class KeyRejected(Exception):
    """The presented key is malformed, unknown, revoked or expired."""


def api_key_authenticate(*, raw: str) -> ApiKey:
    """Return the live key for ``raw`` (``sk_<prefix>_<secret>``) or raise KeyRejected.

    The hash comparison is constant-time; an unknown prefix costs the same hash
    so timing does not reveal which prefixes exist."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "sk" or not parts[1] or not parts[2]:
        raise KeyRejected("Malformed API key.")
    _, prefix, secret = parts
    presented = hash_secret(secret)
    key = _key_by_prefix(prefix) if len(prefix) <= 16 else None
    expected = key.secret_hash if key is not None else "0" * 64
    if not hmac.compare_digest(presented, expected) or key is None:
        raise KeyRejected("Invalid API key.")
    now = timezone.now()
    if key.revoked_at is not None:
        raise KeyRejected("This API key has been revoked.")
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRejected("This API key has expired.")
    if key.profile is not None and not key.profile.active:
        raise KeyRejected("This API key's profile is inactive.")
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_GRANULARITY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
        _remember_for_outages(key)
    return key


# -- when the database is down ---------------------------------------------------------

# How long a key stays known to the pre-flight check without its database. It is
# refreshed with the key's last-used stamp (at most once a minute per key).
OUTAGE_MEMORY_SECONDS = 600


@dataclass(frozen=True)
class RememberedKey:
    """What the pre-flight check needs of a key when the database cannot answer:
    enough to verify the secret and apply the organization's fail mode."""

    secret_hash: str
    organization_id: str
    fail_mode: str
    currency: str
    scopes: tuple[str, ...]
    expires_at: datetime | None


def _outage_key(prefix: str) -> str:
    return f"apikey-outage:{prefix}"


def _remember_for_outages(key: ApiKey) -> None:
    org = key.organization
    entry = RememberedKey(
        key.secret_hash, str(org.pk), org.fail_mode, org.currency, tuple(key.scopes), key.expires_at
    )
    try:
        cache.set(_outage_key(key.prefix), entry, OUTAGE_MEMORY_SECONDS)
    except Exception:  # noqa: BLE001 - a cache hiccup must never fail an authenticated request
        logger.warning("could not remember key %s for outages", key.prefix, exc_info=True)


def _forget_for_outages(key: ApiKey) -> None:
    try:
        cache.delete(_outage_key(key.prefix))
    except Exception:  # noqa: BLE001 - it expires on its own
        logger.warning("could not forget key %s", key.prefix, exc_info=True)


def api_key_remembered(*, raw: str) -> RememberedKey | None:
    """The remembered key ``raw`` presents, if its secret matches and it has not
    expired: how the pre-flight check honours an organization's fail mode while
    the database is down. None when unknown or wrong (the caller answers as it
    would without the database)."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "sk" or not parts[1] or not parts[2] or len(parts[1]) > 16:
        return None
    try:
        entry = cache.get(_outage_key(parts[1]))
    except Exception:  # noqa: BLE001 - no cache either: nothing remembered
        return None
    if not isinstance(entry, RememberedKey):
        return None
    if not hmac.compare_digest(hash_secret(parts[2]), entry.secret_hash):
        return None
    if entry.expires_at is not None and entry.expires_at <= timezone.now():
        return None
    return entry


_KEYS = RowReader(ApiKey)
_ORGS = RowReader(Organization)
_PROFILES = RowReader(Profile)


def _key_by_prefix(prefix: str) -> ApiKey | None:
    """The key with ``prefix``, its organization and profile loaded: one
    hand-written join, since every API request starts here."""
    sql = (
        f"SELECT {_KEYS.columns('k')}, {_ORGS.columns('o')}, {_PROFILES.columns('p')} "  # noqa: S608
        f"FROM {ApiKey._meta.db_table} k "
        f"JOIN {Organization._meta.db_table} o ON o.id = k.organization_id "
        f"LEFT JOIN {Profile._meta.db_table} p ON p.id = k.profile_id "
        "WHERE k.prefix = %s"
    )
    rows = fetch(sql, [prefix])
    if not rows:
        return None
    row = rows[0]
    key = _KEYS.read(row)
    org = _ORGS.read(row, _KEYS.width)
    # Both come from inner-joined rows, so their primary keys are never NULL.
    assert key is not None and org is not None
    key.organization = org
    profile = _PROFILES.read(row, _KEYS.width + _ORGS.width)
    if profile is not None:
        if profile.organization_id == key.organization_id:
            profile.organization = key.organization
        key.profile = profile
    return key
