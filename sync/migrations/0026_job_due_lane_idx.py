"""The dispatcher's claim reads due jobs lane by lane in index order (issue 18); built CONCURRENTLY on
PostgreSQL, as 0024's, so writes go on while it builds."""

from django.db import migrations, models

from sync.migrations._concurrent import AddIndexWithoutLock


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("sync", "0025_lanes_and_allowance")]

    operations = [
        AddIndexWithoutLock(
            model_name="syncjob",
            index=models.Index(
                condition=models.Q(state__in=["pending", "retrying"]),
                fields=["target", "lane", "updated_at", "id"],
                name="job_due_lane_idx",
            ),
        ),
    ]
