"""Schedule rows name sync.tasks.* (issue 16): the modules behind them moved into layer packages.

The old dotted paths stay importable for one release (sync/reconcile.py, sync/retention.py,
sync/alerts.py), so a task queued before this migration still runs.
"""

from typing import Any

from django.db import migrations, models

RENAMED = {
    "sync.reconcile.reconcile_all": "sync.tasks.reconcile_all",
    "sync.retention.prune_scheduled": "sync.tasks.prune_scheduled",
    "sync.alerts.alerts_scheduled": "sync.tasks.alerts_scheduled",
}


def forward(apps: Any, schema_editor: Any) -> None:
    schedule = apps.get_model("django_q", "Schedule")
    for old, new in RENAMED.items():
        schedule.objects.filter(func=old).update(func=new)


def backward(apps: Any, schema_editor: Any) -> None:
    schedule = apps.get_model("django_q", "Schedule")
    for old, new in RENAMED.items():
        schedule.objects.filter(func=new).update(func=old)


class Migration(migrations.Migration):
    dependencies = [("sync", "0021_token_grant")]

    operations = [
        migrations.RunPython(forward, backward),
        # help texts only: they name the functions' new homes
        migrations.AlterField(
            model_name="syncjob",
            name="lease_owner",
            field=models.CharField(
                blank=True,
                help_text="The process holding the lease: pid-claim@host (leases.lease_owner).",
                max_length=100,
            ),
        ),
        migrations.AlterField(
            model_name="quotahold",
            name="key",
            field=models.CharField(
                help_text="The quota owner (sync.delivery.throttle.quota_key)", max_length=128, unique=True
            ),
        ),
    ]
