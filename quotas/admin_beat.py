"""django-celery-beat's pages (the default beat schedule is seeded by
quotas/migrations/0002), with forms that refuse, field by field, what its own
let through to a server error or to a schedule beat cannot run."""

from __future__ import annotations

import inspect
import json
import sys
from decimal import Decimal
from typing import Any, NoReturn

from celery import current_app
from celery.schedules import ParseException, crontab
from django import forms
from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from kombu.utils.json import loads

from profiles.admin_scoping import FormCountCapMixin

CRON_PARTS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

# The JSON fields of a periodic task: what beat needs each to hold (it calls
# the task with args and kwargs, and adds its own entry to the headers), and
# what it reads a blank one as.
BEAT_JSON: dict[str, tuple[type, str, str]] = {
    "args": (list, "[]", 'a JSON array of positional arguments, as in ["a", 1]'),
    "kwargs": (dict, "{}", 'a JSON object of keyword arguments, as in {"org_id": "a"}'),
    "headers": (dict, "{}", 'a JSON object of message headers, as in {"origin": "a"}'),
}


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# The largest number a JSON reader's double holds; 1e400 reads as infinity.
_DOUBLE_MAX = Decimal(sys.float_info.max)


def _finite(text: str) -> Decimal:
    try:
        number = Decimal(text)
        if abs(number) <= _DOUBLE_MAX:
            return number
    except ArithmeticError:  # an exponent past even Decimal's range
        pass
    raise ValueError(f"{text} is out of a number's range")


def beat_reads(text: str) -> Any:
    """The value beat's scheduler reads from a periodic task's JSON text (with
    kombu's decoding, as it does). Raises ValueError for text that is not JSON
    proper, or holds a kombu type marker its decoder cannot read."""
    try:
        # Python's parser also takes NaN and Infinity (and 1e400 as infinity),
        # which kombu would send on in messages no JSON reader accepts.
        json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    try:
        return loads(text)
    except Exception as exc:
        # A decoder registered with kombu ({"__type__": "decimal", ...}) raises
        # what its type does: AttributeError, TypeError, InvalidOperation...
        raise ValueError(f"kombu cannot decode a value in it ({exc})") from exc


class PeriodicTaskForm(beat_admin.PeriodicTaskForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beat_values: dict[str, Any] = {}  # field -> what beat reads from it

    def clean_regtask(self) -> str:
        # Any name is taken (a worker may know tasks this process does not),
        # and it becomes the task's: the checks of a name typed in.
        return self.fields["task"].clean(self.cleaned_data["regtask"])

    def _clean_beat_json(self, field: str) -> str:
        kind, blank, needed = BEAT_JSON[field]
        # Beat reads a blank one as empty; so does the row (the model's save()
        # makes blank headers NULL, which their column refuses).
        text = self.cleaned_data[field].strip() or blank
        try:
            value = beat_reads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Beat cannot read this as JSON: {exc}.") from exc
        if not isinstance(value, kind):
            raise forms.ValidationError(f"Beat needs {needed}.")
        self.beat_values[field] = value
        return text

    def clean_args(self) -> str:
        return self._clean_beat_json("args")

    def clean_kwargs(self) -> str:
        return self._clean_beat_json("kwargs")

    def clean_headers(self) -> str:
        return self._clean_beat_json("headers")

    def clean(self) -> dict[str, Any]:
        if not self.cleaned_data.get("regtask") and "task" not in self.cleaned_data:
            # The name typed in was refused with its own error, and the parent's
            # clean() reads it regardless (KeyError): skip to ModelForm's.
            return super(beat_admin.PeriodicTaskForm, self).clean()
        data = super().clean()
        self._check_arguments(data["task"])
        return data

    def _check_arguments(self, name: str) -> None:
        """Binds the arguments to the signature of the task they are for, as a
        worker calls it with them: a mismatch is the error of the field that
        holds it. A task this process does not know is not checked (a worker
        may know it)."""
        if "args" not in self.beat_values or "kwargs" not in self.beat_values:
            return
        # Tasks are found when their modules are imported; the page's list of
        # registered tasks imports them the same way.
        current_app.loader.import_default_modules()
        task = current_app.tasks.get(name)
        if task is None:
            return
        signature = inspect.signature(task.run)
        args, kwargs = self.beat_values["args"], self.beat_values["kwargs"]
        try:
            signature.bind_partial(*args)
        except TypeError as exc:
            self.add_error("args", f"The task {name} cannot take these: {exc}.")
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            self.add_error("kwargs", f"The task {name} cannot take these: {exc}.")


class CrontabScheduleForm(forms.ModelForm):
    class Meta:
        model = CrontabSchedule
        fields = [*CRON_PARTS, "timezone"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The zone the page was shown with is the row's (or the default), not
        # one the client posts back: a name too long for a file name failed the
        # comparison with OSError.
        self.fields["timezone"].show_hidden_initial = False

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean() returns cleaned_data
        # Each part's validator accepts what celery's parser, which beat and
        # the page's description use, refuses ("-1"). A field error, so the
        # part is not set on the row the page describes again.
        for part in CRON_PARTS:
            if part in data:
                try:
                    crontab(**{part: data[part]})
                except (ParseException, ValueError) as exc:
                    self.add_error(part, f"Celery cannot read this: {exc}.")
        return data


class PeriodicTaskInline(FormCountCapMixin, beat_admin.PeriodicTaskInline):
    """The tasks on a schedule's page, with the form count every inline has."""


admin.site.unregister(
    [PeriodicTask, CrontabSchedule, IntervalSchedule, SolarSchedule, ClockedSchedule]
)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    form = PeriodicTaskForm


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(beat_admin.CrontabScheduleAdmin):
    form = CrontabScheduleForm
    inlines = [PeriodicTaskInline]


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(beat_admin.IntervalScheduleAdmin):
    inlines = [PeriodicTaskInline]


@admin.register(SolarSchedule)
class SolarScheduleAdmin(beat_admin.SolarScheduleAdmin):
    inlines = [PeriodicTaskInline]


@admin.register(ClockedSchedule)
class ClockedScheduleAdmin(beat_admin.ClockedScheduleAdmin):
    inlines = [PeriodicTaskInline]
