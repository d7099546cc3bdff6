"""The circuit breaker: shared by every worker, opened only by connection-level failures."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from crms.mocks.models import MockCall
from crms.models import Connection
from sync.api.auth import api_token_create
from sync.delivery import engine
from sync.delivery.breaker import Gate, breaker_allow
from sync.models import BreakerState, BreakerTransition, CircuitBreaker, JobState, SyncJob
from sync.ops.config_services import config_override_set
from tests.conftest import mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def salesforce(live_server) -> Connection:
    connection = mock_salesforce(live_server.url)
    config_override_set(
        values={"breaker_failures": 2, "breaker_cooldown": 30, "batch_size": 1}, connection="salesforce", actor="test"
    )
    return connection


def ingest(client: Any, record_id: str, **data: Any) -> None:
    body = {"operation": "create", "record_id": record_id, "object_type": "Contact", "data": {"LastName": "L", **data}}
    token = api_token_create(username="p")
    response = client.post(
        "/v1/sync/", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}"
    )
    assert response.status_code == 202


def run(connection: Connection, now: Any) -> None:
    for job_ids in engine.batches_claim(connection=connection, now=now, force=True):
        engine.batch_run(job_ids=job_ids, now=now)


def breaker() -> CircuitBreaker:
    return CircuitBreaker.objects.get()


def test_consecutive_server_errors_open_it_and_an_open_breaker_makes_no_call(client, salesforce, staff_api):
    ingest(client, "warm")
    run(salesforce, timezone.now())  # log in; the faults then meet the writes
    for record_id in ("a", "b", "c"):
        ingest(client, record_id)
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 10}, format="json")
    now = timezone.now()

    run(salesforce, now)

    assert breaker().state == BreakerState.OPEN
    calls = MockCall.objects.filter(system="salesforce", status=503).count()
    assert calls == 2  # a and b failed; c was held back without a call
    held = SyncJob.objects.get(record_id="c")
    assert (held.state, held.attempts, held.last_error_code) == (JobState.RETRYING, 0, "BREAKER_OPEN")
    assert [t.to_state for t in BreakerTransition.objects.order_by("at")] == ["open"]


def test_after_the_cool_down_exactly_one_probe_goes_and_its_success_closes_it(client, salesforce, staff_api):
    ingest(client, "warm")
    run(salesforce, timezone.now())
    for record_id in ("a", "b"):
        ingest(client, record_id)
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 2}, format="json")
    run(salesforce, timezone.now())
    assert breaker().state == BreakerState.OPEN
    later = timezone.now() + timedelta(seconds=31)

    first, _ = breaker_allow(salesforce, later)
    second, wait = breaker_allow(salesforce, later)  # another worker, at the same moment

    assert (first, second) == (Gate.PROBE, Gate.WAIT) and wait is not None
    CircuitBreaker.objects.update(state=BreakerState.OPEN)  # give the probe back for the real run
    run(salesforce, later)
    assert breaker().state == BreakerState.CLOSED
    assert set(SyncJob.objects.values_list("state", flat=True)) == {JobState.SYNCED}
    # (the second half_open is the real run's probe, after the test gave the first one back)
    assert [t.to_state for t in BreakerTransition.objects.order_by("at")] == [
        "open",
        "half_open",
        "half_open",
        "closed",
    ]


def test_a_failed_probe_opens_it_again(client, salesforce, staff_api):
    ingest(client, "warm")
    run(salesforce, timezone.now())
    ingest(client, "a")
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 503, "calls": 10}, format="json")
    CircuitBreaker.objects.update(state=BreakerState.OPEN, opened_at=timezone.now() - timedelta(seconds=60))

    run(salesforce, timezone.now())

    assert breaker().state == BreakerState.OPEN
    opened_at = breaker().opened_at
    assert opened_at is not None and opened_at > timezone.now() - timedelta(seconds=5)


def test_record_level_errors_never_open_it(client, salesforce, staff_api):
    ingest(client, "warm")
    run(salesforce, timezone.now())
    for record_id in ("a", "b", "c"):
        ingest(client, record_id)
    staff_api.post(
        "/v1/crms/mock/salesforce/faults",
        {"record_error": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "calls": 3},
        format="json",
    )

    run(salesforce, timezone.now())

    assert breaker().state == BreakerState.CLOSED
    assert (
        SyncJob.objects.filter(state=JobState.FAILED, last_error_code="FIELD_CUSTOM_VALIDATION_EXCEPTION").count() == 3
    )


def test_a_daily_limit_opens_it_at_once(client, salesforce, staff_api):
    ingest(client, "warm")
    run(salesforce, timezone.now())
    ingest(client, "a")
    staff_api.post("/v1/crms/mock/salesforce/faults", {"status": 403, "calls": 1}, format="json")

    run(salesforce, timezone.now())

    assert breaker().state == BreakerState.OPEN


def test_the_records_status_shows_the_breaker(client, salesforce, staff_api):
    ingest(client, "warm")
    run(salesforce, timezone.now())
    CircuitBreaker.objects.update(state=BreakerState.OPEN, opened_at=timezone.now())

    status = staff_api.get("/v1/sync/status/warm").json()

    assert status["targets"][0]["breaker"] == "open"


@pytest.mark.django_db
def test_a_success_from_a_call_let_through_before_it_opened_does_not_skip_the_probe():
    from sync.delivery.breaker import breaker_failure, breaker_success

    connection = Connection.objects.create(name="sf", kind="salesforce")
    config_override_set(values={"breaker_failures": 1}, connection="sf", actor="test")
    breaker_failure(connection, reason="HTTP_503", now=timezone.now(), probe=False)

    breaker_success(connection, probe=False)  # a straggler that started while it was still closed

    assert breaker().state == "open"
    CircuitBreaker.objects.update(state="half_open")
    breaker_success(connection, probe=True)
    assert breaker().state == "closed"
