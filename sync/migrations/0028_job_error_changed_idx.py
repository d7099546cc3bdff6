"""Two small partial indexes (issue 18), built CONCURRENTLY on PostgreSQL as 0024's: ?error_code= pages read the
few jobs with an error (at a million finished jobs the page scanned them all, 107 ms p99), and the dashboard
counts the open jobs per target and state from an index of those alone (66 ms at a million)."""

from django.db import migrations, models

from sync.migrations._concurrent import AddIndexWithoutLock


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("sync", "0027_job_counts_and_error_index")]

    operations = [
        AddIndexWithoutLock(
            model_name="syncjob",
            index=models.Index(
                condition=models.Q(("last_error_code", ""), _negated=True),
                fields=["last_error_code", "-updated_at", "-id"],
                name="job_error_changed_idx",
            ),
        ),
        AddIndexWithoutLock(
            model_name="syncjob",
            index=models.Index(
                condition=models.Q(("state__in", ["pending", "queued", "in_flight", "retrying", "failed", "held"])),
                fields=["state", "target"],
                name="job_open_idx",
            ),
        ),
    ]
