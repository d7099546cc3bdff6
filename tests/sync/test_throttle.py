"""The shared sliding-window throttle: database and Redis backends, the gate, the engine's use of it."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection as db

from crms.models import Connection
from sync.delivery.throttle import DatabaseThrottle, RedisThrottle, Throttled, gate_for, margin
from sync.models import ThrottleCall


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [1_000_000.0]
    monkeypatch.setattr(DatabaseThrottle, "clock", staticmethod(lambda: now[0]))
    return now


@pytest.mark.django_db
def test_the_database_window_grants_n_calls_then_says_how_long_to_wait(clock):
    throttle = DatabaseThrottle()

    granted = [throttle.acquire("org-1", 3, 10) for _ in range(3)]
    refused = throttle.acquire("org-1", 3, 10)
    clock[0] += 4
    still = throttle.acquire("org-1", 3, 10)
    clock[0] += 6.01
    again = throttle.acquire("org-1", 3, 10)

    assert granted == [0.0, 0.0, 0.0]
    assert refused == pytest.approx(10.0) and still == pytest.approx(6.0)
    assert again == 0.0
    assert throttle.acquire("org-2", 3, 10) == 0.0  # another quota owner has its own window


@pytest.mark.django_db
def test_the_gate_waits_a_short_time_but_hands_back_a_long_wait(clock):
    sf = Connection.objects.create(name="sf", kind="salesforce", quota_owner="org-1")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    short = gate_for(sf, limit=1, window=0.5, backend=DatabaseThrottle(), sleep=sleep)
    short()()  # called and answered at once
    short()()  # waits ~0.5 s, then goes
    long = gate_for(sf, limit=1, window=30, backend=DatabaseThrottle(), sleep=sleep)

    with pytest.raises(Throttled) as raised:
        long()

    assert slept == [pytest.approx(0.5 + margin(0.5))]  # the window plus the arrival margin
    assert raised.value.code == "THROTTLED" and raised.value.retry_after == pytest.approx(30, abs=1)


def _call_in_flight_holds_its_place(backend: Any, key: str, clock: list[float] | None = None) -> None:
    """A call counts from its answer, the latest it can have reached the target: a call granted, then slow to be
    answered, still fills the window a window after its grant, and frees it a window after its answer."""
    import time as real_time

    def advance(seconds: float) -> None:
        if clock is None:
            real_time.sleep(seconds)
        else:
            clock[0] += seconds

    assert backend.acquire(key, 1, 0.5, ticket="slow", busy_for=60) == 0.0
    advance(0.7)  # a window after the grant: unanswered, so it may not have arrived yet
    assert backend.acquire(key, 1, 0.5, ticket="next", busy_for=60) == pytest.approx(0.5, abs=0.01)
    backend.settle(key, "slow")
    refused = backend.acquire(key, 1, 0.5, ticket="next", busy_for=60)
    advance(0.55)
    assert refused == pytest.approx(0.5, abs=0.05) and backend.acquire(key, 1, 0.5, ticket="next") == 0.0


@pytest.mark.django_db
def test_a_database_call_in_flight_counts_until_its_answer(clock):
    _call_in_flight_holds_its_place(DatabaseThrottle(), "org-flight", clock)


@pytest.mark.redis
def test_a_redis_call_in_flight_counts_until_its_answer():
    from django_redis import get_redis_connection

    get_redis_connection("default").delete("recordsync:throttle:org-flight")
    _call_in_flight_holds_its_place(RedisThrottle(), "org-flight")


@pytest.mark.django_db
def test_a_call_killed_in_flight_frees_its_place_once_it_surely_ended(clock):
    throttle = DatabaseThrottle()
    assert throttle.acquire("org-killed", 1, 1, ticket="never-settled", busy_for=30) == 0.0
    clock[0] += 30.5  # past its latest arrival, but not a window past it
    assert throttle.acquire("org-killed", 1, 1) == pytest.approx(0.5)
    clock[0] += 0.51
    assert throttle.acquire("org-killed", 1, 1) == 0.0


@pytest.mark.django_db
def test_connections_sharing_a_quota_owner_share_the_window(clock):
    a = Connection.objects.create(name="sf-sales", kind="salesforce", quota_owner="org-1")
    b = Connection.objects.create(name="sf-support", kind="salesforce", quota_owner="org-1")
    gate_for(a, limit=1, window=60, backend=DatabaseThrottle())()

    with pytest.raises(Throttled):
        gate_for(b, limit=1, window=60, backend=DatabaseThrottle())()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_acquires_never_exceed_the_limit_on_postgresql():
    granted: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        try:
            result = DatabaseThrottle().acquire("org-race", 5, 60)
            with lock:
                granted.append(result)
        finally:
            db.close()

    threads = [threading.Thread(target=take) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert granted.count(0.0) == 5
    assert ThrottleCall.objects.filter(key="org-race").count() == 5


@pytest.mark.redis
def test_the_redis_window_is_atomic_across_threads():
    from django_redis import get_redis_connection

    get_redis_connection("default").delete("recordsync:throttle:org-redis")
    granted: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        result = RedisThrottle().acquire("org-redis", 7, 60)
        with lock:
            granted.append(result)

    threads = [threading.Thread(target=take) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert granted.count(0.0) == 7
    waits = [g for g in granted if g]
    assert all(0 < w <= 60 for w in waits)


@pytest.mark.django_db(transaction=True)
def test_a_throttled_batch_is_handed_back_without_counting_an_attempt(live_server, settings, client):
    from datetime import timedelta

    from django.utils import timezone

    from sync.api.auth import api_token_create
    from sync.delivery import engine
    from sync.models import JobState, SyncJob
    from sync.ops.config_services import config_override_set
    from tests.conftest import mock_salesforce

    salesforce = mock_salesforce(live_server.url)
    config_override_set(values={"rate_limit_calls": 2, "rate_limit_window": 60}, connection="salesforce", actor="t")
    token = api_token_create(username="p")
    for record_id in ("a", "b"):
        body: dict[str, Any] = {
            "operation": "create",
            "record_id": record_id,
            "object_type": "Contact",
            "data": {"LastName": "L"},
        }
        client.post(
            "/v1/sync/", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}"
        )
    settings.SYNC_BATCH_SIZE = 1

    for job_ids in engine.batches_claim(connection=salesforce, now=timezone.now(), force=True):
        engine.batch_run(job_ids=job_ids)

    states = dict(SyncJob.objects.values_list("record_id", "state"))
    assert states == {"a": JobState.SYNCED, "b": JobState.RETRYING}  # login + write used the 2 calls
    held = SyncJob.objects.get(record_id="b")
    assert (held.attempts, held.last_error_code) == (0, "THROTTLED")
    assert held.next_attempt_at is not None and held.next_attempt_at > timezone.now() + timedelta(seconds=30)
    # The wait is kept as an attempt held back, not a failed one: the failure alert does not count it.
    from sync.models import SyncAttempt
    from sync.ops.alerts import failures_measure

    assert list(SyncAttempt.objects.filter(job=held).values_list("outcome", flat=True)) == ["held"]
    settings.ALERT_FAILURE_MIN_ATTEMPTS = 1
    assert failures_measure(salesforce, timezone.now(), 3600) == (0.0, "0 of 1 attempts in the last 1h")


@pytest.mark.parametrize("answer", ["ok", "refused", "error"])
def test_the_http_seam_settles_every_call_it_was_granted_whatever_came_back(answer: str) -> None:
    import requests
    import responses

    from crms.http import HttpClient, TransportError

    events: list[str] = []

    def gate() -> Any:
        events.append("granted")
        return lambda: events.append("settled")

    http = HttpClient(connection_name="sf", gate=gate)
    with responses.RequestsMock() as mocked:
        if answer == "ok":
            mocked.get("https://crm.example/x", json={}, status=500)
            assert http.request("GET", "https://crm.example/x").status_code == 500
        elif answer == "refused":
            mocked.get("https://crm.example/x", body=requests.ConnectionError("refused"))
            with pytest.raises(TransportError):
                http.request("GET", "https://crm.example/x")
        else:
            mocked.get("https://crm.example/x", body=ValueError("the adapter broke"))
            with pytest.raises(ValueError):
                http.request("GET", "https://crm.example/x")

    assert events == ["granted", "settled"]
