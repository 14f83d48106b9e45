"""Budgets store their provider trimmed and lower-cased, as ingestion records
it (quotas.services._normalized); those saved before kept it as typed
("OpenAI") and never matched."""

from django.db import migrations
from django.db.models.functions import Lower, Trim


def lower_case_providers(apps, schema_editor):
    Budget = apps.get_model("quotas", "Budget")
    Budget.objects.exclude(provider="").update(provider=Lower(Trim("provider")))


class Migration(migrations.Migration):
    dependencies = [("quotas", "0005_budget_index_by_profile")]

    operations = [migrations.RunPython(lower_case_providers, migrations.RunPython.noop)]
