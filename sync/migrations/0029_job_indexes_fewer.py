"""Three indexes fewer on the jobs table (issue 18). Every change of a job's state writes a new entry in each of
its indexes, and a claim changes 200 jobs at once: each index cost about 1 ms of a claim's 10. The dispatcher's
(target, state, next_attempt_at) and the leases' (state, lease_expires_at) served queries that job_due_lane_idx
and job_open_idx now serve from far fewer entries; the target's own index is the first column of
job_target_changed_idx. Dropped CONCURRENTLY on PostgreSQL, so no write waits (0024, 0028)."""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

from sync.migrations._concurrent import RemoveIndexWithoutLock

# Django's name for the foreign key's index (schema_editor._create_index_name: the same on every backend).
TARGET_INDEX = "sync_syncjob_target_id_2df42822"


def _concurrently(schema_editor: Any) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def target_index_drop(apps: Any, schema_editor: Any) -> None:
    schema_editor.execute(f"DROP INDEX {_concurrently(schema_editor)}IF EXISTS {TARGET_INDEX}")


def target_index_create(apps: Any, schema_editor: Any) -> None:
    create = f"CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS {TARGET_INDEX}"
    schema_editor.execute(f"{create} ON sync_syncjob (target_id)")


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("crms", "0006_mock_query_locator"),
        ("sync", "0028_job_error_changed_idx"),
    ]

    operations = [
        RemoveIndexWithoutLock(model_name="syncjob", name="job_dispatch_idx"),
        RemoveIndexWithoutLock(model_name="syncjob", name="job_lease_idx"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="syncjob",
                    name="target",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="jobs",
                        to="crms.connection",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(target_index_drop, target_index_create)],
        ),
    ]
