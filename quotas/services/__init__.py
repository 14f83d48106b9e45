"""The limiter engine's writes: check, reserve, charge, settle, release, expire.

It counts amounts along dimensions it is handed and knows nothing of prices:
the ledger tells it what was spent (``budget_charge``) and, for a period opened
for the first time, what had been spent before (``quotas.spend``).

Concurrency: every counter change is a conditional or additive UPDATE; rows of
``BudgetPeriod`` are always locked in (budget id, period start) order and a
reservation's own row before its periods, so concurrent reservations, charges
and releases never deadlock, and a reservation never pushes spent + reserved
of a block budget past its limit.

Speed: a pre-flight check reads its budgets and their current periods with one
hand-written query; on PostgreSQL a reservation is one statement (lock the
periods in order, decide, insert the reservation and its holds, add to
``reserved``), so a hot budget's row lock is held for that statement and the
commit only.

Modules, each importing only those before it: ``base`` (what they share),
``periods`` (matching, current periods, the setup memo's budgets),
``counters`` (charge, settle, release, expire), ``limiter`` (check and
reserve), ``budgets`` (budget changes and time zone moves). Callers import
from ``quotas.services``; a test that replaces a function patches the module
that calls it.
"""

from __future__ import annotations

from quotas.services.base import (
    COUNT_METRICS,
    BudgetState,
    Charge,
    CheckResult,
    Dimensions,
    LimiterUnavailable,
    PeriodKey,
    ReservationNotFound,
)
from quotas.services.budgets import (
    BUDGET_SETTLE_SECONDS,
    budget_create,
    budget_delete,
    budget_rows_lock,
    budget_update,
    budgets_delete,
    budgets_rezone,
)
from quotas.services.counters import (
    ChargePlan,
    InlineCharge,
    budget_charge,
    budget_charge_apply,
    budget_charge_inline,
    budget_charge_plan,
    period_held,
    reservation_release,
    reservations_expire,
    reservations_purge,
)
from quotas.services.limiter import (
    quota_check,
)
from quotas.services.periods import (
    MEMO_BUDGETS_MAX,
    active_budgets,
    active_budgets_read,
    amount_for,
    budget_matches,
    budget_states_known,
    budget_states_learn,
    budget_states_now,
    budget_states_overview,
    budget_states_read,
    budgets_learn,
    current_states,
    memo_budgets_read,
    period_ensure,
)

__all__ = [
    "BUDGET_SETTLE_SECONDS",
    "BudgetState",
    "COUNT_METRICS",
    "Charge",
    "ChargePlan",
    "CheckResult",
    "Dimensions",
    "InlineCharge",
    "LimiterUnavailable",
    "MEMO_BUDGETS_MAX",
    "PeriodKey",
    "ReservationNotFound",
    "active_budgets",
    "active_budgets_read",
    "amount_for",
    "budget_charge",
    "budget_charge_apply",
    "budget_charge_inline",
    "budget_charge_plan",
    "budget_create",
    "budget_delete",
    "budget_rows_lock",
    "budget_matches",
    "budget_states_known",
    "budget_states_learn",
    "budget_states_now",
    "budget_states_overview",
    "budget_states_read",
    "budget_update",
    "budgets_delete",
    "budgets_learn",
    "budgets_rezone",
    "current_states",
    "memo_budgets_read",
    "period_ensure",
    "period_held",
    "quota_check",
    "reservation_release",
    "reservations_expire",
    "reservations_purge",
]
