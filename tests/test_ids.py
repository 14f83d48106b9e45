"""Time-ordered ids (config.ids): version 7, in order, never repeated, not
even by a forked process."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from config.ids import uuid7, uuid7s


def test_ids_made_together_are_version_7_in_order_with_the_time_first():
    before = datetime.now(UTC)
    ids = list(uuid7s(300))
    after = datetime.now(UTC)
    assert len(set(ids)) == 300
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
    assert ids == sorted(ids)
    (stamp,) = {datetime.fromtimestamp((i.int >> 80) / 1000, UTC) for i in ids}
    assert before - timedelta(milliseconds=1) <= stamp <= after
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == 300


def test_ids_made_one_at_a_time_do_not_repeat_across_blocks_of_randomness():
    ids = [uuid7() for _ in range(5000)]  # ~10 blocks of the pool
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == 5000


def test_a_forked_child_does_not_hand_out_its_parents_randomness():
    uuid7()  # the pool holds unused bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        try:
            os.write(write, uuid7().bytes)
        finally:
            os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    parent = uuid7()
    mask = (1 << 62) - 1
    assert child.int & mask != parent.int & mask


def test_reservations_get_time_ordered_ids(tenant_a, db):
    from decimal import Decimal

    from quotas.services import budget_create
    from tests.quotas.helpers import priced_hold

    budget_create(org=tenant_a.org, name="Cap", limit=Decimal(10))
    held = [priced_hold(tenant_a.org, "0.1") for _ in range(3)]
    ids = [h.reservation.pk for h in held]
    assert {i.version for i in ids} == {7}
    stamps = [i.int >> 80 for i in ids]  # milliseconds: ties are in random order
    assert stamps == sorted(stamps)
