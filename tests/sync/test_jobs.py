"""Job state changes on ingest, the after-commit nudge and the sweep. A worker's finish, guarded by the version
it claimed, goes through outcomes.outcomes_save: tests/sync/test_engine.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_q.brokers import get_broker

from sync import tasks
from sync.models import JobClaim, JobState, SyncJob

pytestmark = pytest.mark.django_db


def ingest(client: Any, email: str = "a@example.com") -> None:
    body = {"operation": "update", "record_id": "c-1", "object_type": "contact", "data": {"email": email}}
    response = client.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202


def test_a_new_change_reopens_a_failed_job_with_its_error_cleared(api, connections):
    ingest(api)
    job = SyncJob.objects.get(target__name="salesforce")
    # As the engine leaves a job a permanent error failed (test_engine.py sends one through the real path).
    SyncJob.objects.filter(pk=job.pk).update(
        state=JobState.FAILED,
        attempts=1,
        last_error_code="INVALID_FIELD",
        last_error_message="bad",
        last_error_permanent=True,
    )

    ingest(api, email="fixed@example.com")

    job.refresh_from_db()
    assert (job.state, job.attempts, job.last_error_code) == (JobState.PENDING, 0, "")


def test_accepted_events_queue_a_dispatch_nudge_after_commit(api, connections, django_capture_on_commit_callbacks):
    broker = get_broker()
    before = broker.queue_size() or 0

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        ingest(api)

    assert len(callbacks) == 1
    assert (broker.queue_size() or 0) == before + 2  # one per target: outreach, salesforce
    broker.purge_queue()


def test_the_request_succeeds_when_the_broker_is_down(
    api, connections, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("sync.delivery.dispatch.async_task", broker_down)

    with django_capture_on_commit_callbacks(execute=True):
        ingest(api)

    assert SyncJob.objects.filter(state=JobState.PENDING).count() == 2
    assert "broker unavailable; jobs stay pending until the sweep" in caplog.text


def test_the_sweep_nudges_connections_with_old_pending_jobs(api, connections):
    ingest(api)
    broker = get_broker()
    broker.purge_queue()
    assert tasks.sweep() == 0  # fresh jobs are left to the nudge that came with them

    SyncJob.objects.update(updated_at=timezone.now() - timedelta(minutes=5))
    cache.clear()  # the debounce of the ingest's own nudge

    assert tasks.sweep() == 2
    assert broker.queue_size() == 2
    broker.purge_queue()


def test_the_dispatch_tick_queues_a_ready_batch_for_a_worker(api, connections, settings):
    settings.SYNC_FLUSH_INTERVAL = 0
    ingest(api)
    broker = get_broker()
    broker.purge_queue()

    assert tasks.dispatch_tick(connections["salesforce"].pk) == 1

    job = SyncJob.objects.get(target__name="salesforce")
    assert job.state == JobState.PENDING and JobClaim.objects.filter(job=job).exists()  # claimed, not started
    assert broker.queue_size() == 1
    broker.purge_queue()
