"""Writes for tenancy and identity: organizations, memberships, user
accounts, API keys and the profiles usage names, one module each."""

from __future__ import annotations

from profiles.services.keys import (
    KEY_PREFIX_ALPHABET,
    KEY_PREFIX_LENGTH,
    LAST_USED_GRANULARITY,
    OUTAGE_MEMORY_SECONDS,
    VALID_SCOPES,
    IssuedKey,
    KeyRejected,
    RememberedKey,
    api_key_authenticate,
    api_key_create,
    api_key_prepare,
    api_key_remembered,
    api_key_revoke,
    hash_secret,
    parse_scopes,
)
from profiles.services.memberships import (
    membership_invite,
    membership_set,
    membership_set_check,
    memberships_delete_check,
    organization_owner_check,
)
from profiles.services.organizations import (
    organization_create,
    organization_gate_share,
    organization_locked,
    organization_save,
    organizations_lock,
)
from profiles.services.profiles import (
    CredentialsVanished,
    credentials_vanished,
    profile_get_or_create,
    profile_vanished,
    profiles_named,
    profiles_named_read,
    row_vanished,
)
from profiles.services.users import users_delete, users_owner_check

__all__ = [
    "KEY_PREFIX_ALPHABET",
    "KEY_PREFIX_LENGTH",
    "LAST_USED_GRANULARITY",
    "OUTAGE_MEMORY_SECONDS",
    "VALID_SCOPES",
    "CredentialsVanished",
    "IssuedKey",
    "KeyRejected",
    "RememberedKey",
    "api_key_authenticate",
    "api_key_create",
    "api_key_prepare",
    "api_key_remembered",
    "api_key_revoke",
    "credentials_vanished",
    "hash_secret",
    "membership_invite",
    "membership_set",
    "membership_set_check",
    "memberships_delete_check",
    "organization_create",
    "organization_gate_share",
    "organization_locked",
    "organization_owner_check",
    "organization_save",
    "organizations_lock",
    "parse_scopes",
    "profile_get_or_create",
    "profile_vanished",
    "profiles_named",
    "profiles_named_read",
    "row_vanished",
    "users_delete",
    "users_owner_check",
]
