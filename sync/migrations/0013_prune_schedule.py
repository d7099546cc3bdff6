"""Install the daily retention prune in django-q2's scheduler (idempotent): at 04:00 UTC, after the reconcile."""

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db import migrations


def next_four_am() -> datetime:
    now = datetime.now(UTC)
    today = datetime.combine(now.date(), time(4), tzinfo=UTC)
    return today if today > now else today + timedelta(days=1)


def add_schedule(apps: Any, schema_editor: Any) -> None:
    schedule = apps.get_model("django_q", "Schedule")
    schedule.objects.update_or_create(
        name="sync-prune",
        defaults={"func": "sync.retention.prune_scheduled", "schedule_type": "D", "repeats": -1},
        create_defaults={
            "func": "sync.retention.prune_scheduled",
            "schedule_type": "D",
            "repeats": -1,
            "next_run": next_four_am(),
        },
    )


def remove_schedule(apps: Any, schema_editor: Any) -> None:
    apps.get_model("django_q", "Schedule").objects.filter(name="sync-prune").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0012_alerts"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
