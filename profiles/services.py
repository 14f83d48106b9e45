"""Writes for tenancy and identity."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from config.rows import Read, RowReader, db_value, fetch, in_list, read
from profiles.models import (
    ApiKey,
    Membership,
    Organization,
    Profile,
    validate_address,
    validate_timezone,
)
from profiles.selectors import user_by_email
from profiles.signals import timezone_changed

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


def organization_create(
    *,
    slug: str,
    name: str,
    timezone_name: str = "UTC",
    owner_email: str | None = None,
) -> Organization:
    """Create an organization and, with ``owner_email``, its owner: a staff user
    (created if missing, with an unusable password until one is set) holding the
    owner membership. All or nothing; raises ValidationError on bad input or a
    taken slug."""
    validate_timezone(timezone_name)
    org = Organization(slug=slug, name=name, timezone=timezone_name)
    org.full_clean()
    try:
        with transaction.atomic():
            org.save()
            if owner_email:
                owner = _user_for_email(owner_email)
                Membership.objects.create(user=owner, organization=org, role=Membership.Role.OWNER)
    except IntegrityError as exc:
        raise ValidationError({"slug": f"An organization with slug {slug!r} exists."}) from exc
    return org


def organizations_lock(org_ids: Iterable[object]) -> None:
    """In the caller's transaction, lock these organizations' rows in id order,
    FOR NO KEY UPDATE (which the foreign key checks of their writes pass): the
    first lock of any change to an organization's setup, so two such changes
    take their locks in one order."""
    list(
        Organization.objects.select_for_update(no_key=True)
        .filter(pk__in=sorted(org_ids, key=str))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def organization_locked(org_id: uuid.UUID | str) -> Organization:
    """``organizations_lock`` of one organization, and its row as it stands
    once locked (its time zone, which what follows may reckon periods in)."""
    organizations_lock([org_id])
    return Organization.objects.get(pk=org_id)


def organization_save(*, org: Organization) -> None:
    """Save the fields of ``org`` that changed (validated). A new time zone is
    announced (``profiles.signals.timezone_changed``) in the same transaction,
    so what follows the zone moves with it.

    An UPDATE that assigns a unique column (``slug``), even its own value,
    locks the row against the foreign key checks (FOR KEY SHARE) of every
    ingestion committing for the organization. So the row is locked FOR NO
    KEY UPDATE, which those checks pass, the announcement comes before the
    row is written (an ingestion holding a counter row the receivers lock
    must be able to commit), and only changed fields are written (an admin
    renaming the organization does not hold up its ingestions' commits)."""
    org.full_clean()
    with transaction.atomic():
        stored = organization_locked(org.pk)
        changed = [
            f.name
            for f in Organization._meta.concrete_fields
            if f.name not in _KEPT_BY_THE_DATABASE
            and getattr(stored, f.attname) != getattr(org, f.attname)
        ]
        if "timezone" in changed:
            org.__dict__.pop("tz", None)  # a cached_property of the old zone
            timezone_changed.send(sender=Organization, organization=org, previous=stored.timezone)
        if changed:
            org.save(update_fields=[*changed, "updated_at"])


# Never written from a row in hand: the key, the creation stamp, and the
# version the database's triggers keep.
_KEPT_BY_THE_DATABASE = {"id", "created_at", "updated_at", "setup_version"}


def _user_for_email(email: str):  # noqa: ANN202 - the user model is swappable
    validate_address(email)
    User = get_user_model()
    user = user_by_email(email=email)
    if user is None:
        user = User(username=email, email=email, is_staff=True)
        user.set_unusable_password()
        user.save()
    elif not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return user


def organization_owner_check(
    *, org_id: uuid.UUID | str, roles: Mapping[int, str | None], new_owners: int = 0
) -> None:
    """Raise ValidationError when the organization ``org_id``, which has an
    owner, would be left with none once the memberships in ``roles`` (by id)
    take their new role (None: deleted, or moved to another organization)
    and ``new_owners`` memberships are added as owners: the last owner
    removing or demoting themselves would leave nobody who surely manages
    it, but operators. An organization that has no owner (made without one)
    is left as it is.

    Locks the organization first (``organizations_lock``) in the caller's
    transaction, which should make the change before it commits: two
    managers taking away each other's ownership at once are judged one after
    the other, and the second is refused."""
    with transaction.atomic():
        organizations_lock([org_id])
        owner = Membership.Role.OWNER
        now = set(
            Membership.objects.filter(organization_id=org_id, role=owner).values_list(
                "pk", flat=True
            )
        )
        after = {pk for pk in now if roles.get(pk, owner) == owner}
        after |= {pk for pk, role in roles.items() if role == owner}
        if not now or after or new_owners:
            return
        name = Organization.objects.filter(pk=org_id).values_list("name", flat=True).first()
        raise ValidationError(
            f"{name} would be left without an owner: make another member its owner first.",
            code="last_owner",
        )


def memberships_delete_check(*, memberships: Iterable[Membership]) -> None:
    """Raise ValidationError when deleting ``memberships`` would leave an
    organization without an owner (``organization_owner_check``, whose locks
    the caller's transaction holds for the deletion)."""
    by_org: dict[uuid.UUID, dict[int, str | None]] = {}
    for membership in memberships:
        by_org.setdefault(membership.organization_id, {})[membership.pk] = None
    with transaction.atomic():
        organizations_lock(by_org)  # all at once, in the order every change takes them
        for org_id, roles in by_org.items():
            organization_owner_check(org_id=org_id, roles=roles)


def membership_set_check(*, org: Organization, user, role: str) -> None:
    """Raise ValidationError when giving ``user`` the ``role`` in ``org``
    would take away its last owner (``organization_owner_check``)."""
    if role == Membership.Role.OWNER or user is None or user.pk is None:
        return
    mine = Membership.objects.filter(user=user, organization=org).values_list("pk", flat=True)
    organization_owner_check(org_id=org.pk, roles=dict.fromkeys(mine, role))


def membership_set(*, org: Organization, user, role: str) -> Membership:
    """Give ``user`` the ``role`` in ``org`` (staff flag on, so the admin opens).
    Raises ValidationError, changing nothing, when that would take away the
    organization's last owner."""
    with transaction.atomic():
        membership_set_check(org=org, user=user, role=role)
        membership, _ = Membership.objects.update_or_create(
            user=user, organization=org, defaults={"role": role}
        )
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
    return membership


def membership_invite(*, org: Organization, email: str, role: str) -> Membership:
    """Add the user with ``email`` (created if new: staff, no password yet) to ``org``."""
    return membership_set(org=org, user=_user_for_email(email), role=role)


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


def profiles_named(*, org: Organization, names: Iterable[str]) -> dict[str, Profile]:
    """``org``'s profiles among ``names``, by external id: one hand-written query
    (ingestion looks its profiles up on every request)."""
    return read(profiles_named_read(org=org, names=names))


def profiles_named_read(*, org: Organization, names: Iterable[str]) -> Read[dict[str, Profile]]:
    """``profiles_named`` as a ``Read``, to send with a request's other reads."""
    names = sorted(set(names))
    if not names:
        return Read.nothing({})
    named, params = in_list("p.external_id", names)
    sql = (
        f"SELECT {_PROFILES.columns('p')} FROM {Profile._meta.db_table} p "  # noqa: S608
        f"WHERE p.organization_id = %s AND {named}"
    )

    def load(rows: list[tuple]) -> dict[str, Profile]:
        found: dict[str, Profile] = {}
        for row in rows:
            profile = _PROFILES.read(row)
            assert profile is not None  # the only table selected: its key is never NULL
            profile.organization = org
            found[profile.external_id] = profile
        return found

    params = [db_value(Profile, "organization", org.pk), *params]
    return Read(sql, params, _PROFILES.width, load)


def profile_vanished(exc: BaseException | None) -> bool:
    """Was ``exc`` (or what caused it) a row refused for referring to a
    profile that is not there (deleted after it was looked up)?"""
    return _vanished(exc, Profile, "profile_id")


def credentials_vanished(exc: BaseException | None) -> bool:
    """Was ``exc`` (or what caused it) a row refused for referring to an API
    key or an organization that is not there: deleted while the request it
    authenticated was being served?"""
    return _vanished(exc, ApiKey, "api_key_id") or _vanished(exc, Organization, "organization_id")


class CredentialsVanished(Exception):
    """The request's key or organization was deleted while it was served:
    nothing it wrote stays, and the key no longer authenticates."""


def _vanished(exc: BaseException | None, model: type[models.Model], column: str) -> bool:
    while exc is not None:
        if isinstance(exc, psycopg.errors.ForeignKeyViolation):
            detail = exc.diag.message_detail or ""
            return f"({column})" in detail and f'"{model._meta.db_table}"' in detail
        exc = exc.__cause__
    return False


def profile_get_or_create(*, org: Organization, external_id: str) -> Profile:
    """The profile named ``external_id`` in ``org``, created on first mention.
    Safe under concurrency (the unique constraint decides the race)."""
    found = profiles_named(org=org, names=[external_id]).get(external_id)
    if found is not None:
        return found
    profile, _ = Profile.objects.get_or_create(organization=org, external_id=external_id)
    return profile
