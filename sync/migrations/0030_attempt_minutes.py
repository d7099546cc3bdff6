"""The dashboard's throughput charts read per-minute counts of attempts that the cluster keeps every minute
(issue 18): a day of attempts counted on every page grew with the load (sync.ops.stats.throughput)."""

from typing import Any

from django.db import migrations, models


def add_schedule(apps: Any, schema_editor: Any) -> None:
    """Count each finished minute's attempts every minute (idempotent), for the dashboard and GET /v1/sync/stats."""
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="sync-attempt-minutes",
        defaults={"func": "sync.tasks.attempt_minutes_refresh", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps: Any, schema_editor: Any) -> None:
    apps.get_model("django_q", "Schedule").objects.filter(name="sync-attempt-minutes").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0029_job_indexes_fewer"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.CreateModel(
            name="AttemptMinute",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("minute", models.DateTimeField(unique=True)),
                ("synced", models.PositiveIntegerField(default=0)),
                ("failed", models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(add_schedule, remove_schedule),
    ]
