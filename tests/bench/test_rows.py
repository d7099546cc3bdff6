"""The baselines' rows fit today's tables: bench/ingest.py's executemany phases insert them as they are.

A column added to the jobs table without a default (the lane, issue 18) once broke `make bench` with
a NOT NULL violation that nothing in `make test` saw."""

from __future__ import annotations

import pytest
from django.db import connection

from bench.rows import INSERT_EVENT_SQL, INSERT_JOB_SQL, event_row, job_rows, sample_event
from sync.models import SyncEvent, SyncJob

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_the_baseline_rows_insert_into_the_event_and_job_tables(connections) -> None:
    event = event_row(sample_event("bench-1"), request_id="bench")
    targets = [connections["salesforce"].pk, connections["outreach"].pk]
    with connection.cursor() as cursor:
        cursor.execute(INSERT_EVENT_SQL, event)
        cursor.executemany(INSERT_JOB_SQL, job_rows(event, targets))

    stored = SyncEvent.objects.get(record_id="bench-1")
    assert stored.payload == {"email": "bench-1@example.com"}
    jobs = SyncJob.objects.filter(record_id="bench-1")
    assert sorted(jobs.values_list("target_id", flat=True)) == sorted(targets)
    assert {(job.state, job.lane, job.last_event_id) for job in jobs} == {("pending", 0, stored.id)}
