"""An organization's setup, remembered per process for as long as its version holds.

What a request reads before it writes (its budgets and their period rows, the
prices it can use, its profiles by name) changes rarely, and every change
bumps ``Organization.setup_version`` in the same transaction (database
triggers). A request whose key lookup read the organization row just now
knows the version in force, so it can use what an earlier request of this
process read at that same version instead of reading it again.

Each app keeps its own entries in the memo (``costs``: prices, ``quotas``:
budgets and periods, ``profiles``: profiles by name); only what was read from
the database at that version, or after it, goes in.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import connection

from profiles.models import Organization, Profile

# Organizations remembered at once per process, and entries of one kind per
# organization (profiles by name, period rows); past these, forget and start over.
MAX_ORGANIZATIONS = 10_000
MAX_ENTRIES = 100_000

_memos: dict[object, tuple[int, dict[str, Any]]] = {}
_lock = threading.Lock()


def setup_memo(org: Organization) -> dict[str, Any] | None:
    """The memo of ``org``'s setup at ``org.setup_version``, which the caller
    read from the database in this request (a stale row would give a stale
    setup). None where no version is kept (databases other than PostgreSQL)
    or when this process holds a newer version than the row says."""
    if connection.vendor != "postgresql":
        return None
    version = org.setup_version
    held = _memos.get(org.pk)
    if held is not None and held[0] == version:
        return held[1]
    with _lock:
        held = _memos.get(org.pk)
        if held is not None:
            if held[0] == version:
                return held[1]
            if held[0] > version:
                return None
        if len(_memos) >= MAX_ORGANIZATIONS:
            _memos.clear()
        memo: dict[str, Any] = {}
        _memos[org.pk] = (version, memo)
        return memo


def setup_memo_clear() -> None:
    """Forget every organization's setup (tests)."""
    with _lock:
        _memos.clear()


def memo_part(memo: dict[str, Any], name: str) -> dict[Any, Any]:
    """The part of ``memo`` called ``name``, to learn into: emptied when it
    holds ``MAX_ENTRIES`` (an organization with a profile per end user keeps
    meeting new ones; a long-lived process meets a period a day)."""
    part = memo.setdefault(name, {})
    if len(part) >= MAX_ENTRIES:
        # A new part, not the old one cleared: another thread may be reading it.
        part = memo[name] = {}
    return part


def profiles_known(memo: dict[str, Any], names: list[str]) -> dict[str, Profile] | None:
    """The profiles named ``names`` as remembered, by external id; None unless
    all of them are."""
    known = memo.get("profiles", {})
    found = {n: p for n in names if (p := known.get(n)) is not None}
    return found if len(found) == len(names) else None


def profiles_learn(memo: dict[str, Any], found: dict[str, Profile]) -> None:
    """Remember profiles read at the memo's version (or after it)."""
    if found:
        memo_part(memo, "profiles").update(found)
