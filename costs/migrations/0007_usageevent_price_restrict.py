"""An event's price is RESTRICT, not PROTECT: deleting an organization whose
events used its own override deletes both (PROTECT refused it); a used
price is still never deleted on its own. Django enforces it; no SQL."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('costs', '0006_rollups_without_events'),
    ]

    operations = [
        migrations.AlterField(
            model_name='usageevent',
            name='price',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='+', to='costs.price'),
        ),
    ]
