"""Indexes that serve GET /v1/sync/jobs pages in their order (issue 18).

On PostgreSQL they are built CONCURRENTLY: the jobs table may hold millions of rows, and a plain CREATE INDEX
would block every write (ingest, the engine) while it builds. Elsewhere (SQLite) a plain index.
"""

from django.db import migrations, models

from sync.migrations._concurrent import AddIndexWithoutLock


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("sync", "0023_attempt_outcome_held")]

    operations = [
        AddIndexWithoutLock(
            model_name="syncjob", index=models.Index(fields=["-updated_at", "-id"], name="job_changed_idx")
        ),
        AddIndexWithoutLock(
            model_name="syncjob",
            index=models.Index(fields=["state", "-updated_at", "-id"], name="job_state_changed_idx"),
        ),
        AddIndexWithoutLock(
            model_name="syncjob",
            index=models.Index(fields=["target", "-updated_at", "-id"], name="job_target_changed_idx"),
        ),
    ]
