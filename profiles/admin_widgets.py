"""Admin widgets every app's admin shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest


class KeyCheckedAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete select, showing a submitted value that cannot be
    a key of the related model ("abc" for a UUID) as no selection.

    When a form comes back with errors, Django's widget looks the submitted
    value up to label the selected option, and that lookup raises on a value
    of the wrong type: a server error in place of the field's own "Select a
    valid choice"."""

    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        key = self.field.target_field
        return super().optgroups(name, [v for v in value if _is_key(key, v)], attr)


def _is_key(field: models.Field, value: str) -> bool:
    try:
        field.to_python(value)
    except ValidationError:
        return False
    return True


class KeyCheckedAutocompleteMixin:
    """For a ModelAdmin with ``autocomplete_fields``: their widget is
    ``KeyCheckedAutocompleteSelect``."""

    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey, request: HttpRequest, **kwargs: Any
    ):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):  # type: ignore[attr-defined]
            kwargs["widget"] = KeyCheckedAutocompleteSelect(
                db_field,
                self.admin_site,  # type: ignore[attr-defined]
                using=kwargs.get("using"),
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]
