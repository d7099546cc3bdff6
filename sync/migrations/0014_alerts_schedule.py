"""Install the alert check in django-q2's scheduler (idempotent): every minute."""

from typing import Any

from django.db import migrations


def add_schedule(apps: Any, schema_editor: Any) -> None:
    schedule = apps.get_model("django_q", "Schedule")
    schedule.objects.update_or_create(
        name="sync-alerts",
        defaults={"func": "sync.alerts.alerts_scheduled", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps: Any, schema_editor: Any) -> None:
    apps.get_model("django_q", "Schedule").objects.filter(name="sync-alerts").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0013_prune_schedule"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
