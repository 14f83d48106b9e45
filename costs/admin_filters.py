"""The ledger and rollup changelists at scale: list filters whose choices
come from the rollups, not from a scan of the ledger, and an ordering kept to
what an index serves.

The ledger grows by every event; its rollups by the variety of usage (days x
profiles x providers x models x operations). Django's value filters read
their choices with ``SELECT DISTINCT`` over the filtered model itself: on a
500,000-event ledger that was 90 ms of each changelist page for the
providers and 50 ms for the profiles, and it grows with every event. The
rollups equal the ledger (every ingestion writes both in one transaction),
so they name the same providers."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.main import ORDER_VAR
from django.db.models import Max, Min, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from unfold.contrib.filters.admin import AutocompleteSelectFilter, DropdownFilter
from unfold.contrib.filters.forms import AutocompleteDropdownForm
from unfold.views import ChangeList

from costs.models import DailyUsage
from profiles.admin_scoping import tenant_access, visible_to
from profiles.models import Organization


class ProviderFilter(DropdownFilter):
    """The providers the user's organizations have usage with, from the rollups."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        rows = visible_to(request, DailyUsage.objects.all())
        names = rows.order_by("provider").values_list("provider", flat=True).distinct()
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in (None, ""):
            return queryset
        return queryset.filter(provider=value)


class _ProfileSearchForm(AutocompleteDropdownForm):
    """The filter's search box. The profile it shows as chosen is looked up
    among the user's own organizations' (a profile id of another tenant's,
    typed into the URL, shows as nothing chosen, not by its name). A value
    that is no id never reaches it: the changelist refuses the lookup first."""

    def __init__(self, request: HttpRequest, name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, name, *args, **kwargs)
        field: Any = self.fields[name]
        field.queryset = visible_to(request, field.queryset)


class ProfileFilter(AutocompleteSelectFilter):
    """A profile picked by searching (the profile admin's own, tenant-scoped
    search): no list of every profile, and no query for choices at all."""

    title = "profile"
    form_class = _ProfileSearchForm


class SortableOnlyChangeList(ChangeList):
    """Orders only by the admin's ``sortable_by`` columns. Django offers links
    for those alone but honours any column index typed into ``?o=``; on the
    ledger that is a read and sort of an organization's every event. An
    ``?o=`` naming none of them keeps the admin's own ordering (Django would
    fall back to the primary key alone)."""

    params: dict[str, Any]

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        if not self.params.get(ORDER_VAR) or self._sorts_by_a_column():
            return super().get_ordering(request, queryset)
        params = self.params
        self.params = {k: v for k, v in params.items() if k != ORDER_VAR}
        try:
            return super().get_ordering(request, queryset)
        finally:
            self.params = params

    def _sorts_by_a_column(self) -> bool:
        for part in str(self.params[ORDER_VAR]).split("."):
            try:
                name = self.list_display[int(part.rpartition("-")[2])]
            except (IndexError, ValueError):
                continue
            if self.get_ordering_field(name):
                return True
        return False


class LedgerChangeList(SortableOnlyChangeList):
    """A page of the ledger in time order across several organizations (an
    operator's, or a member's of more than one) without sorting them all.

    The ledger's time index begins with the organization, so "the newest 100
    events of every tenant" was a read and sort of the whole ledger (5.5 s at
    5.5M events, growing with every one). Each organization's n-th newest
    event is an index walk of n entries; the newest of those bounds a window
    of time (that event and newer) which each organization's index reads by
    range, at most n events of each. When the window holds k matching events,
    k the rows up to the end of the page, it holds the page: every event on
    it is at least as new as the k-th, which is in the window. The window is
    tried with n = k, then wider; a filter that matches too few events in
    either is left to the full sort. The same holds oldest first. Only the
    page is cut: actions on "all" still act on every matching event."""

    queryset: QuerySet[Any]
    root_queryset: QuerySet[Any]
    # Windows tried, as multiples of the rows up to the end of the page.
    WIDENING = (1, 16)

    def get_results(self, request: HttpRequest) -> None:
        everything = self.queryset
        self.queryset = self._page_window(request, everything)
        try:
            super().get_results(request)
        finally:
            self.queryset = everything

    def _page_window(self, request: HttpRequest, qs: QuerySet[Any]) -> QuerySet[Any]:
        order = [str(o) for o in qs.query.order_by]
        if not order or order[0].lstrip("-") != "occurred_at":
            return qs
        if not request.user.is_superuser and len(tenant_access(request).visible) < 2:
            return qs  # one organization's index serves the page as it is
        paginator = self.model_admin.get_paginator(request, qs, self.list_per_page)
        if not 1 <= self.page_num <= paginator.num_pages:
            return qs  # no such page: Django answers it
        newest_first = order[0].startswith("-")
        side = "occurred_at__gte" if newest_first else "occurred_at__lte"
        pick = Max if newest_first else Min
        k = self.page_num * self.list_per_page
        orgs = visible_to(request, Organization.objects.all(), path="")
        for widen in self.WIDENING:
            n = widen * k
            nth = (
                self.root_queryset.filter(organization_id=OuterRef("pk"))
                .order_by(order[0])
                .values("occurred_at")[n - 1 : n]
            )
            bound = orgs.annotate(nth=Subquery(nth)).aggregate(bound=pick("nth"))["bound"]
            if bound is None:  # no organization has n events: the sort is of few
                return qs
            # The organizations named, so each one's index is read by range.
            window = qs.filter(organization__in=orgs.values("pk"), **{side: bound})
            if window.order_by().values_list("pk", flat=True)[k - 1 : k]:
                return window
        return qs
