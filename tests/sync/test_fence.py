"""A worker stopped in the middle of a CRM call (SIGTERM, a task timeout) hands its jobs back, but the
cut-off call may still land: no newer state of those records is sent before it no longer can."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from crms.models import Connection
from sync.api.auth import api_token_create
from sync.delivery import engine, leases
from sync.models import JobState, SyncJob
from tests.conftest import mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def salesforce(live_server: Any) -> Connection:
    return mock_salesforce(live_server.url)


def ingest(client: Any, email: str) -> None:
    body = {
        "operation": "update",
        "record_id": "c-1",
        "object_type": "Contact",
        "data": {"LastName": "Lovelace", "Email": email},
    }
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {api_token_create(username='platform')}"
    assert client.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202


@pytest.fixture
def stopped_mid_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker gets SIGTERM (django-q2 turns it into an exception) while the Collections call is out."""
    real = requests.Session.request

    def request(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        if "/composite/" in url:
            raise KeyboardInterrupt  # what a stop signal raises: not an Exception
        return real(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", request)


def send(connection: Connection) -> None:
    for job_ids in engine.batches_claim(connection=connection, now=timezone.now(), force=True):
        engine.batch_run(job_ids=job_ids)


def test_jobs_of_a_call_cut_off_mid_way_wait_until_it_can_no_longer_land(
    client, salesforce, stopped_mid_call, settings
):
    ingest(client, "v1@example.com")
    before = timezone.now()

    with pytest.raises(KeyboardInterrupt):
        send(salesforce)
    job = SyncJob.objects.get()
    ingest(client, "v2@example.com")  # a newer state arrives while the old call may still be out
    fenced = SyncJob.objects.get()

    budget = settings.CRM_HTTP_CONNECT_TIMEOUT + settings.CRM_HTTP_READ_TIMEOUT + leases.FENCE_MARGIN_SECONDS
    assert job.state == JobState.PENDING and job.lease_owner == ""
    assert job.fence_until is not None
    assert before + timedelta(seconds=budget - 1) <= job.fence_until <= timezone.now() + timedelta(seconds=budget)
    assert (fenced.fence_until, fenced.version) == (job.fence_until, job.version + 1)  # the newer event keeps it
    assert engine.batches_claim(connection=salesforce, now=timezone.now(), force=True) == []
    assert len(engine.batches_claim(connection=salesforce, now=job.fence_until, force=True)) == 1


def test_a_batch_stopped_between_calls_is_handed_back_with_no_fence(client, salesforce, monkeypatch):
    ingest(client, "v1@example.com")

    def stop(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt  # stopped while preparing the batch: no call was under way

    monkeypatch.setattr(engine, "jobs_prepare", stop)
    with pytest.raises(KeyboardInterrupt):
        send(salesforce)

    job = SyncJob.objects.get()
    assert (job.state, job.fence_until) == (JobState.PENDING, None)
    assert len(engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)) == 1


def test_a_batch_cut_off_by_the_database_going_away_is_handed_back_once_it_answers(client, salesforce, monkeypatch):
    """A PostgreSQL restart mid-batch: the worker lives on, so neither it dying nor its silence frees the
    lease. It hands the jobs back itself, trying again until the database answers (the kill matrix's restart
    proof stood still 71 s, until the lease ran out, before this)."""
    from django.db import OperationalError

    ingest(client, "v1@example.com")

    def cut(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("terminating connection due to administrator command")

    real_release = leases.leases_release
    tries: list[dict[str, Any]] = []
    slept: list[float] = []

    def release(**kwargs: Any) -> int:
        tries.append(kwargs)
        if len(tries) < 3:
            raise OperationalError("connection refused")  # still restarting
        return real_release(**kwargs)

    monkeypatch.setattr(engine, "jobs_prepare", cut)
    monkeypatch.setattr(leases, "leases_release", release)
    monkeypatch.setattr("sync.delivery.leases.time.sleep", slept.append)
    with pytest.raises(OperationalError):
        send(salesforce)

    job = SyncJob.objects.get()
    assert (job.state, job.lease_owner, job.fence_until) == (JobState.PENDING, "", None)  # no call was out
    assert len(tries) == 3 and slept == [leases.RELEASE_RETRY_SECONDS] * 2
    assert len(engine.batches_claim(connection=salesforce, now=timezone.now(), force=True)) == 1


def test_a_database_that_stays_away_leaves_the_batch_to_its_lease(client, salesforce, monkeypatch, settings):
    from django.db import OperationalError

    ingest(client, "v1@example.com")
    settings.SYNC_LEASE_SECONDS = 0  # the lease is already over when the first try fails

    def cut(**kwargs: Any) -> int:
        raise OperationalError("connection refused")

    monkeypatch.setattr(engine, "jobs_prepare", lambda *a, **k: cut())
    monkeypatch.setattr(leases, "leases_release", cut)
    with pytest.raises(OperationalError):
        send(salesforce)  # gives up at the lease's end instead of waiting forever

    assert SyncJob.objects.get().state == JobState.IN_FLIGHT  # leases_expire takes it from here
