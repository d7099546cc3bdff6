"""Job state changes: the version guard, the after-commit nudge and the sweep."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_q.brokers import get_broker

from sync import services, tasks
from sync.models import JobState, SyncJob

pytestmark = pytest.mark.django_db


def ingest(client: Any, email: str = "a@example.com") -> None:
    body = {"operation": "update", "record_id": "c-1", "object_type": "contact", "data": {"email": email}}
    response = client.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202


def claim(job: SyncJob) -> int:
    SyncJob.objects.filter(pk=job.pk).update(state=JobState.IN_FLIGHT, lease_expires_at=timezone.now())
    return job.version


def test_a_worker_finishes_the_version_it_claimed(api, connections):
    ingest(api)
    job = SyncJob.objects.get(target__name="salesforce")

    state = services.job_finish(job_id=job.pk, version=claim(job), succeeded=True)

    job.refresh_from_db()
    assert state == job.state == JobState.SYNCED
    assert job.synced_at is not None
    assert job.lease_expires_at is None


def test_an_event_arriving_in_flight_sends_the_job_back_to_pending(api, connections):
    ingest(api)
    job = SyncJob.objects.get(target__name="salesforce")
    claimed = claim(job)
    ingest(api, email="newer@example.com")  # arrives while the worker is busy

    in_flight = SyncJob.objects.get(pk=job.pk)
    assert in_flight.state == JobState.IN_FLIGHT
    assert in_flight.version == claimed + 1

    state = services.job_finish(job_id=job.pk, version=claimed, succeeded=True)

    job.refresh_from_db()
    assert state == job.state == JobState.PENDING
    assert job.synced_at is None
    assert job.last_event is not None and job.last_event.payload == {"email": "newer@example.com"}


def test_a_permanent_error_fails_the_job_and_a_transient_one_retries(api, connections):
    ingest(api)
    salesforce = SyncJob.objects.get(target__name="salesforce")
    outreach = SyncJob.objects.get(target__name="outreach")

    services.job_finish(
        job_id=salesforce.pk,
        version=claim(salesforce),
        succeeded=False,
        error_code="INVALID_FIELD",
        error_message="No such column",
        permanent=True,
    )
    services.job_finish(
        job_id=outreach.pk,
        version=claim(outreach),
        succeeded=False,
        error_code="http_503",
        error_message="Service Unavailable",
        permanent=False,
    )

    assert SyncJob.objects.get(pk=salesforce.pk).state == JobState.FAILED
    assert SyncJob.objects.get(pk=outreach.pk).state == JobState.RETRYING


def test_a_new_change_reopens_a_failed_job_with_its_error_cleared(api, connections):
    ingest(api)
    job = SyncJob.objects.get(target__name="salesforce")
    services.job_finish(
        job_id=job.pk,
        version=claim(job),
        succeeded=False,
        error_code="INVALID_FIELD",
        error_message="bad",
        permanent=True,
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

    monkeypatch.setattr("sync.dispatch.async_task", broker_down)

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

    assert SyncJob.objects.get(target__name="salesforce").state == JobState.QUEUED
    assert broker.queue_size() == 1
    broker.purge_queue()
