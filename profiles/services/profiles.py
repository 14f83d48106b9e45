"""Profiles named by usage, and telling a row refused for a profile, key or
organization deleted meanwhile."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from django.db import models

from config.rows import Read, db_value, in_list, read
from profiles.models import (
    ApiKey,
    Organization,
    Profile,
)
from profiles.services.keys import _PROFILES


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
    return row_vanished(exc, Profile, "profile_id")


def credentials_vanished(exc: BaseException | None) -> bool:
    """Was ``exc`` (or what caused it) a row refused for referring to an API
    key or an organization that is not there: deleted while the request it
    authenticated was being served?"""
    return row_vanished(exc, ApiKey, "api_key_id") or row_vanished(
        exc, Organization, "organization_id"
    )


class CredentialsVanished(Exception):
    """The request's key or organization was deleted while it was served:
    nothing it wrote stays, and the key no longer authenticates."""


def row_vanished(exc: BaseException | None, model: type[models.Model], column: str) -> bool:
    """Was ``exc`` (or what caused it) a row refused for its ``column``
    referring to a row of ``model`` that is not there?"""
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
