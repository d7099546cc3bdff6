"""The engine: pending jobs go out in batches through the real connector to the mock Salesforce."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from crms.mocks.models import MockCall, MockRecord
from crms.models import Connection
from sync.api.auth import api_token_create
from sync.delivery import engine, leases, outcomes
from sync.models import AttemptOutcome, JobClaim, JobState, RecordLink, SyncAttempt, SyncJob
from tests.conftest import drain, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def salesforce(live_server) -> Connection:
    return mock_salesforce(live_server.url)


@pytest.fixture
def client_(client) -> Any:
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {api_token_create(username='platform')}"
    return client


def ingest(client: Any, record_id: str = "c-1", operation: str = "create", **data: Any) -> None:
    body = {
        "operation": operation,
        "record_id": record_id,
        "object_type": "Contact",
        "data": {"LastName": "Lovelace", "Email": "ada@example.com", **data},
    }
    if operation == "delete":
        body.pop("data")
    response = client.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content


def in_salesforce() -> list[MockRecord]:
    return list(MockRecord.objects.filter(system="salesforce", object="Contact", deleted_at__isnull=True))


def test_a_pending_job_is_sent_and_marked_synced_with_its_link_and_attempt(client_, salesforce):
    ingest(client_)

    assert drain(salesforce)["synced"] == 1

    job = SyncJob.objects.get()
    link = RecordLink.objects.get()
    (record,) = in_salesforce()
    assert (job.state, job.attempts, job.synced_at is not None) == (JobState.SYNCED, 0, True)
    assert (link.external_object, link.external_id) == ("Contact", record.record_id)
    assert record.fields["Email"] == "ada@example.com" and record.fields["RecordSync_Id__c"] == "c-1"
    assert SyncAttempt.objects.get().outcome == AttemptOutcome.SUCCESS
    status = client_.get("/v1/sync/status/c-1").json()
    assert status["targets"][0]["state"] == "synced" and status["targets"][0]["external_id"] == record.record_id


def test_an_unchanged_payload_is_not_written_again(client_, salesforce):
    ingest(client_)
    drain(salesforce)
    calls_before = MockCall.objects.count()

    ingest(client_, operation="update")
    result = drain(salesforce)

    assert result.get("skipped") == 1
    attempt = SyncAttempt.objects.order_by("-id").first()
    assert attempt is not None and (attempt.outcome, attempt.error_code) == (AttemptOutcome.SKIPPED, "unchanged")
    assert MockCall.objects.count() == calls_before


def test_an_update_and_a_delete_follow_the_link(client_, salesforce):
    ingest(client_)
    drain(salesforce)
    ingest(client_, operation="update", Email="ada@new.example.com")
    drain(salesforce)
    assert [r.fields["Email"] for r in in_salesforce()] == ["ada@new.example.com"]

    ingest(client_, operation="delete")
    drain(salesforce)

    assert in_salesforce() == []
    assert SyncJob.objects.get().state == JobState.SYNCED


def test_a_transient_error_retries_later_with_backoff(client_, salesforce, staff_api):
    ingest(client_)
    drain(salesforce)  # log in first, so the fault meets the write
    ingest(client_, record_id="c-2")
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 1, "retry_after": 30}, format="json")
    now = timezone.now()

    drain(salesforce, now)

    job = SyncJob.objects.get(record_id="c-2")
    assert (job.state, job.attempts, job.last_error_code, job.last_error_permanent) == (
        JobState.RETRYING,
        1,
        "SERVER_UNAVAILABLE",
        False,
    )
    assert job.next_attempt_at is not None and job.next_attempt_at >= now + timedelta(seconds=30)
    assert engine.batches_claim(connection=salesforce, now=now + timedelta(seconds=5), force=True) == []

    drain(salesforce, job.next_attempt_at + timedelta(seconds=1))

    assert SyncJob.objects.get(record_id="c-2").state == JobState.SYNCED


def test_a_server_error_without_retry_after_retries_in_seconds_at_first_and_minutes_at_most(
    client_, salesforce, staff_api, settings
):
    settings.SYNC_MAX_ATTEMPTS = 50
    ingest(client_)
    drain(salesforce)  # log in first, so the faults meet the writes
    ingest(client_, record_id="c-2")
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 2}, format="json")
    now = timezone.now()

    drain(salesforce, now)
    first = SyncJob.objects.get(record_id="c-2")
    SyncJob.objects.filter(pk=first.pk).update(attempts=30)  # long after the backoff stopped doubling
    later = now + timedelta(hours=1)
    drain(salesforce, later)
    last = SyncJob.objects.get(record_id="c-2")

    assert (first.state, first.last_error_code) == (JobState.RETRYING, "SERVER_UNAVAILABLE")
    assert first.next_attempt_at is not None and first.next_attempt_at - now <= timedelta(seconds=2)
    assert (last.state, last.attempts) == (JobState.RETRYING, 31)
    assert last.next_attempt_at is not None and last.next_attempt_at - later <= timedelta(minutes=10)


def test_a_server_error_asking_for_hours_is_still_retried_within_the_backoff_cap(client_, salesforce, staff_api):
    ingest(client_)
    drain(salesforce)
    ingest(client_, record_id="c-2")
    staff_api.post(
        "/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 1, "retry_after": 3 * 3600}, format="json"
    )
    now = timezone.now()

    drain(salesforce, now)

    job = SyncJob.objects.get(record_id="c-2")
    assert job.last_error_code == "SERVER_UNAVAILABLE" and job.next_attempt_at is not None
    assert job.next_attempt_at - now <= timedelta(minutes=10)  # a 5xx says nothing of quota: never hours


def test_only_a_quota_answer_may_hold_a_job_longer_than_the_backoff_cap():
    from crms.base import ConnectorError

    reset_read_as_retry = ConnectorError("bad gateway", code="HTTP_502", retry_after=3500, http_status=502)
    rate_limited = ConnectorError(
        "slow down", code="RATE_LIMITED", retry_after=3500, http_status=429, pause_connection=True
    )
    timed_out = ConnectorError("timed out", code="timeout")

    assert outcomes.retry_wait(reset_read_as_retry, 0, counts=True) <= 600
    assert outcomes.retry_wait(rate_limited, 0, counts=True) >= 3500
    assert outcomes.retry_wait(timed_out, 0, counts=True) <= 2


def test_a_permanent_error_fails_the_job_with_the_reason(client_, salesforce):
    response = client_.post(
        "/v1/sync/",
        data=json.dumps(
            {"operation": "create", "record_id": "c-9", "object_type": "Contact", "data": {"Email": "x@example.com"}}
        ),
        content_type="application/json",
    )
    assert response.status_code == 202

    drain(salesforce)

    job = SyncJob.objects.get()
    assert (job.state, job.last_error_code, job.last_error_permanent) == (
        JobState.FAILED,
        "REQUIRED_FIELD_MISSING",
        True,
    )
    assert "LastName" in job.last_error_message


def test_a_job_fails_after_its_last_allowed_attempt(client_, salesforce, staff_api, settings):
    settings.SYNC_MAX_ATTEMPTS = 2
    ingest(client_)
    drain(salesforce)
    ingest(client_, record_id="c-2")
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 5}, format="json")
    later = timezone.now() + timedelta(hours=1)

    drain(salesforce)
    drain(salesforce, later)

    job = SyncJob.objects.get(record_id="c-2")
    assert (job.state, job.attempts) == (JobState.FAILED, 2)


def test_a_change_arriving_while_in_flight_is_sent_next_not_lost(client_, salesforce, monkeypatch):
    from crms.salesforce.connector import SalesforceConnector

    ingest(client_)
    (job_ids,) = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)
    push = SalesforceConnector.push

    def newer_arrives_during_the_call(self: SalesforceConnector, records: Any) -> Any:
        ingest(client_, operation="update", Email="newer@example.com")
        return push(self, records)

    monkeypatch.setattr(SalesforceConnector, "push", newer_arrives_during_the_call)
    engine.batch_run(job_ids=job_ids)
    monkeypatch.setattr(SalesforceConnector, "push", push)
    assert SyncJob.objects.get().state == JobState.PENDING
    drain(salesforce)

    assert [r.fields.get("Email") for r in in_salesforce()] == ["newer@example.com"]
    assert SyncJob.objects.get().state == JobState.SYNCED


def test_a_change_arriving_between_the_claim_and_the_start_is_what_the_batch_sends(client_, salesforce):
    ingest(client_)
    (job_ids,) = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)
    ingest(client_, operation="update", Email="newer@example.com")  # the job is claimed, not started

    assert engine.batch_run(job_ids=job_ids) == {"claimed": 1, "synced": 1}

    assert [r.fields["Email"] for r in in_salesforce()] == ["newer@example.com"]
    assert SyncJob.objects.get().state == JobState.SYNCED


def test_a_batch_claimed_twice_is_sent_once(client_, salesforce):
    ingest(client_)
    (job_ids,) = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)

    first = engine.batch_run(job_ids=job_ids)
    second = engine.batch_run(job_ids=job_ids)  # a duplicated task

    assert first["synced"] == 1 and second == {"claimed": 0}
    assert SyncAttempt.objects.count() == 1


def test_an_expired_lease_sends_the_job_back_to_pending(client_, salesforce, settings):
    ingest(client_)
    engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)  # its task is then lost

    expired = leases.leases_expire(now=timezone.now() + timedelta(seconds=settings.SYNC_LEASE_SECONDS + 1))

    assert expired == 1 and SyncJob.objects.get().state == JobState.PENDING


def test_batches_wait_for_the_flush_interval_unless_full(client_, salesforce, settings):
    settings.SYNC_FLUSH_INTERVAL = 60
    settings.SYNC_BATCH_SIZE = 3
    ingest(client_, record_id="a")
    ingest(client_, record_id="b")
    now = timezone.now()

    assert engine.batches_claim(connection=salesforce, now=now) == []  # 2 < 3 and young
    ingest(client_, record_id="c")
    assert [len(b) for b in engine.batches_claim(connection=salesforce, now=now)] == [3]
    ingest(client_, record_id="d")
    assert [len(b) for b in engine.batches_claim(connection=salesforce, now=now + timedelta(seconds=61))] == [1]


def test_the_dispatcher_command_queues_ready_batches(client_, salesforce, settings):
    settings.SYNC_FLUSH_INTERVAL = 0
    ingest(client_)

    call_command("sync_dispatch", "--once")

    job = SyncJob.objects.get()
    assert job.state == JobState.PENDING and JobClaim.objects.filter(job=job).exists()  # claimed, not yet started


def test_a_record_that_cannot_be_created_fails_before_any_call_and_costs_no_quota(client_, salesforce):
    ingest(client_)
    drain(salesforce)  # logged in
    calls = MockCall.objects.count()
    body = {"operation": "create", "record_id": "c-9", "object_type": "Contact", "data": {"Email": "x@example.com"}}
    assert client_.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202

    drain(salesforce)

    job = SyncJob.objects.get(record_id="c-9")
    assert (job.state, job.last_error_code, job.last_error_permanent) == (
        JobState.FAILED,
        "REQUIRED_FIELD_MISSING",
        True,
    )
    assert "LastName required to create a Contact" in job.last_error_message
    assert MockCall.objects.count() == calls
    assert SyncAttempt.objects.filter(job=job, outcome=AttemptOutcome.ERROR).count() == 1


def test_a_soft_delete_rule_marks_the_record_instead_of_deleting_it(client_, salesforce, staff_api):
    rule = {
        "name": "soft",
        "match_object_type": "Contact",
        "targets": [
            {"target": "salesforce", "object": "Contact", "on_delete": "soft_delete", "soft_delete_field": "Deleted__c"}
        ],
    }
    assert staff_api.post("/v1/sync/rules", {"rules": [rule]}, format="json").status_code == 200
    ingest(client_)
    drain(salesforce)

    ingest(client_, operation="delete")
    drain(salesforce)

    (record,) = in_salesforce()
    assert record.fields["Deleted__c"] is True


def test_a_create_then_a_delete_before_the_flush_writes_nothing(client_, salesforce):
    ingest(client_)
    ingest(client_, operation="delete")  # both before any batch went out
    calls = MockCall.objects.count()

    drain(salesforce)

    assert MockCall.objects.count() == calls and in_salesforce() == []
    job = SyncJob.objects.get()
    assert job.state == JobState.SKIPPED
    assert SyncAttempt.objects.get().error_code == "never_synced"


def test_a_worker_whose_lease_was_taken_over_leaves_the_job_to_the_new_holder(client_, salesforce):
    ingest(client_)
    (job_ids,) = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)
    SyncJob.objects.filter(id__in=job_ids).update(state=JobState.IN_FLIGHT, lease_owner="another-worker")
    job = SyncJob.objects.get()
    outcome = outcomes.Outcome(job, JobState.FAILED, None, attempt=AttemptOutcome.ERROR)

    states = outcomes.outcomes_save([outcome], owner="this-worker", now=timezone.now())

    job.refresh_from_db()
    assert states == ["lost_lease"]
    assert (job.state, job.lease_owner) == (JobState.IN_FLIGHT, "another-worker")


def test_a_record_matched_to_a_crm_record_linked_elsewhere_fails_alone_with_the_reason(client_, salesforce):
    ingest(client_, "c-1")
    drain(salesforce)
    RecordLink.objects.filter(record_id="c-1").update(record_id="c-0")  # another record owns that CRM id
    ingest(client_, "c-1", operation="update", Email="second@example.com")
    ingest(client_, "c-2", Email="other@example.com")

    totals = drain(salesforce)

    failed = SyncJob.objects.get(record_id="c-1")
    assert totals == {"claimed": 2, "synced": 1, "failed": 1}
    assert (failed.state, failed.last_error_code, failed.last_error_permanent) == (
        JobState.FAILED,
        "LINK_CONFLICT",
        True,
    )
    assert "already linked to another record" in failed.last_error_message
    assert SyncAttempt.objects.filter(job=failed).latest("id").error_code == "LINK_CONFLICT"
    assert set(RecordLink.objects.values_list("record_id", flat=True)) == {"c-0", "c-2"}


def test_a_backlog_is_claimed_only_as_fast_as_batches_finish(client_, salesforce, settings):
    settings.SYNC_BATCH_SIZE, settings.SYNC_OUTSTANDING_BATCHES = 1, 2
    for n in range(5):
        ingest(client_, f"c-{n}")

    first = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)
    none_while_full = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)
    engine.batch_run(job_ids=first[0])
    after_one = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)

    assert (len(first), len(none_while_full), len(after_one)) == (2, 0, 1)
    assert SyncJob.objects.filter(state=JobState.PENDING, claim__isnull=True).count() == 2
    assert JobClaim.objects.count() == 2


def test_a_batch_interrupted_by_a_stop_hands_its_jobs_back_at_once(client_, salesforce, monkeypatch):
    ingest(client_)
    (job_ids,) = engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)

    def stopped(*args: Any, **kwargs: Any) -> None:
        raise SystemExit(143)  # what a SIGTERM raises in a worker (sync.tasks.worker_stop_handler_install)

    monkeypatch.setattr("crms.salesforce.connector.SalesforceConnector.push", stopped)
    with pytest.raises(SystemExit):
        engine.batch_run(job_ids=job_ids)

    job = SyncJob.objects.get()
    assert (job.state, job.lease_owner, job.lease_expires_at, job.attempts) == (JobState.PENDING, "", None, 0)


def test_a_batch_whose_task_cannot_be_queued_goes_back_to_pending(client_, salesforce, monkeypatch, settings):
    from sync import tasks

    settings.SYNC_FLUSH_INTERVAL = 0
    ingest(client_)
    tried: list[Any] = []

    def broker_down(*args: Any, **kwargs: Any) -> None:
        tried.append(args)
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks, "async_task", broker_down)
    queued = tasks.dispatch_tick(salesforce.pk)

    job = SyncJob.objects.get()
    assert queued == 0 and len(tried) == 1  # it was claimed, then could not be queued
    assert (job.state, job.lease_owner, JobClaim.objects.count()) == (JobState.PENDING, "", 0)


def test_the_lease_owner_names_the_process_holding_it(client_, salesforce):
    import os

    ingest(client_)
    engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)

    assert JobClaim.objects.get().owner.startswith(f"{os.getpid()}-")
