"""The job-table index migrations (sync/0024 to sync/0030) undone and done again on the database under test:
CONCURRENTLY on PostgreSQL, the plain operations elsewhere, and the same indexes at the end either way."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("sync", "0023_attempt_outcome_held")]


def _job_indexes() -> set[str]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, "sync_syncjob")
    return {name for name, spec in found.items() if spec["index"] and not spec["primary_key"]}


def test_the_index_migrations_run_backwards_and_forwards():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("sync")
    indexes = _job_indexes()

    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    undone = _job_indexes()
    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    assert "job_due_lane_idx" in indexes and "job_due_lane_idx" not in undone  # added by 0026, undone
    assert "job_dispatch_idx" in undone and "job_dispatch_idx" not in indexes  # removed by 0029, restored
    assert _job_indexes() == indexes
