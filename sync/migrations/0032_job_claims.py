"""A dispatcher's claim becomes a row of its own (JobClaim) instead of a `queued` job state (issue 18).

Claiming a batch changed 200 job rows, each a new row version written into every index of the jobs table; it
now inserts 200 narrow rows and the jobs stay pending until a worker starts them (docs/BENCHMARKS.md). Jobs
queued when this runs go back to pending, their claims dropped: no call was made for a queued job, and a
task that does turn up for them finds nothing to start. job_open_idx loses `queued` from its condition, built
again CONCURRENTLY on PostgreSQL so no write waits (0024)."""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

from sync.migrations._concurrent import AddIndexWithoutLock, RemoveIndexWithoutLock


def queued_to_pending(apps: Any, schema_editor: Any) -> None:
    jobs = apps.get_model("sync", "SyncJob")
    jobs.objects.filter(state="queued").update(state="pending", lease_owner="", lease_expires_at=None)


STATES = [
    ("pending", "Pending"),
    ("in_flight", "In Flight"),
    ("synced", "Synced"),
    ("retrying", "Retrying"),
    ("failed", "Failed"),
    ("skipped", "Skipped"),
    ("held", "Held"),
    ("superseded", "Superseded"),
]


class Migration(migrations.Migration):
    atomic = False  # CREATE and DROP INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("crms", "0006_mock_query_locator"),
        ("sync", "0031_event_id_uuid7"),
    ]

    operations = [
        migrations.RunPython(queued_to_pending, migrations.RunPython.noop, atomic=True),
        migrations.CreateModel(
            name="JobClaim",
            fields=[
                (
                    "job",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="claim",
                        serialize=False,
                        to="sync.syncjob",
                    ),
                ),
                (
                    "lane",
                    models.PositiveSmallIntegerField(
                        choices=[(0, "live changes"), (1, "reads and polls"), (2, "backfill and reconcile")]
                    ),
                ),
                (
                    "owner",
                    models.CharField(
                        help_text="The dispatcher that claimed it (pid-claim@host), then the worker that took its task.",
                        max_length=100,
                    ),
                ),
                ("claimed_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField()),
                (
                    "target",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="crms.connection",
                    ),
                ),
            ],
        ),
        RemoveIndexWithoutLock(model_name="syncjob", name="job_open_idx"),
        migrations.AlterField(
            model_name="jobcount",
            name="state",
            field=models.CharField(choices=STATES, max_length=16),
        ),
        migrations.AlterField(
            model_name="syncjob",
            name="state",
            field=models.CharField(choices=STATES, default="pending", max_length=16),
        ),
        AddIndexWithoutLock(
            model_name="syncjob",
            index=models.Index(
                condition=models.Q(("state__in", ["pending", "in_flight", "retrying", "failed", "held"])),
                fields=["state", "target"],
                name="job_open_idx",
            ),
        ),
    ]
