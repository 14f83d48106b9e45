"""Rollup rows a repricing emptied (all their events moved to their model's
own name) were left at zero; ``rollup_move`` now deletes them as it empties
them, and this deletes those left before. A row at zero counts no event and
sums to nothing, so the totals do not change."""

from django.db import migrations


def delete_empty_rows(apps, schema_editor):
    DailyUsage = apps.get_model("costs", "DailyUsage")
    DailyUsage.objects.filter(events=0).delete()


class Migration(migrations.Migration):
    dependencies = [("costs", "0005_catalog_json_validated")]

    operations = [migrations.RunPython(delete_empty_rows, migrations.RunPython.noop)]
