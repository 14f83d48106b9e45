"""Time-ordered ids: UUIDs of version 7 (RFC 9562), from pooled randomness.

The millisecond comes first, then a sequence number within the call, then 62
random bits. Rows with such keys land at the right edge of their primary-key
index instead of at random leaves, and ids made together sort in the order
they were made. ``uuid4()`` reads the system's randomness once per id, a
system call each (several microseconds here, more than pricing an event);
this reads it in blocks and hands out slices, per thread."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

_BLOCK = 4096  # bytes of randomness read at a time
_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


class _Pool(threading.local):
    data = b""
    at = 0


_pool = _Pool()


def _forget_pool() -> None:
    # A forked child must not hand out its parent's bytes (gunicorn --preload).
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget_pool)


def _random(count: int) -> bytes:
    pool = _pool
    if count > _BLOCK // 2:
        return os.urandom(count)
    if pool.at + count > len(pool.data):
        pool.data, pool.at = os.urandom(_BLOCK), 0
    start = pool.at
    pool.at = start + count
    return pool.data[start : start + count]


def uuid7s(count: int) -> Iterator[uuid.UUID]:
    """``count`` new ids, in ascending order."""
    ms = time.time_ns() // 1_000_000 & _MS_MASK
    randomness = _random(8 * count)
    for i in range(count):
        rand_b = int.from_bytes(randomness[8 * i : 8 * i + 8], "big") & _RAND_B_MASK
        yield uuid.UUID(int=ms << 80 | 0x7 << 76 | (i & 0xFFF) << 64 | 0b10 << 62 | rand_b)


def uuid7() -> uuid.UUID:
    """One new id."""
    return next(uuid7s(1))
