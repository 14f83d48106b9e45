"""django-celery-beat's pages (the default beat schedule is seeded by
quotas/migrations/0002), with forms that refuse, field by field, what its own
let through to a server error."""

from __future__ import annotations

from typing import Any

from celery.schedules import ParseException, crontab
from django import forms
from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import CrontabSchedule, PeriodicTask

CRON_PARTS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


class PeriodicTaskForm(beat_admin.PeriodicTaskForm):
    def clean_regtask(self) -> str:
        # Any name is taken (a worker may know tasks this process does not),
        # and it becomes the task's: the checks of a name typed in.
        return self.fields["task"].clean(self.cleaned_data["regtask"])

    def clean(self) -> dict[str, Any]:
        if not self.cleaned_data.get("regtask") and "task" not in self.cleaned_data:
            # The name typed in was refused with its own error, and the parent's
            # clean() reads it regardless (KeyError): skip to ModelForm's.
            return super(beat_admin.PeriodicTaskForm, self).clean()
        return super().clean()


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


admin.site.unregister(PeriodicTask)
admin.site.unregister(CrontabSchedule)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    form = PeriodicTaskForm


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(beat_admin.CrontabScheduleAdmin):
    form = CrontabScheduleForm
