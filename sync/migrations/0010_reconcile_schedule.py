"""Install the daily reconcile in django-q2's scheduler (idempotent): at 03:00 UTC, when the CRMs are quiet."""

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db import migrations


def next_three_am() -> datetime:
    now = datetime.now(UTC)
    today = datetime.combine(now.date(), time(3), tzinfo=UTC)
    return today if today > now else today + timedelta(days=1)


def add_schedule(apps: Any, schema_editor: Any) -> None:
    schedule = apps.get_model("django_q", "Schedule")
    schedule.objects.update_or_create(
        name="sync-reconcile",
        defaults={"func": "sync.reconcile.reconcile_all", "schedule_type": "D", "repeats": -1},
        create_defaults={
            "func": "sync.reconcile.reconcile_all",
            "schedule_type": "D",
            "repeats": -1,
            "next_run": next_three_am(),
        },
    )


def remove_schedule(apps: Any, schema_editor: Any) -> None:
    apps.get_model("django_q", "Schedule").objects.filter(name="sync-reconcile").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0009_two_way"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
