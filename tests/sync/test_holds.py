"""A target's own limits end when the target takes calls again (issue 13): a spent daily limit is probed
back with one cheap call at a growing interval, staff can resume a held connection, and a cap parks jobs
only briefly and lets them go as soon as an answer shows room."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone
from django.utils.module_loading import import_string

from crms.mocks.models import MockCall
from crms.models import Connection
from sync import tasks
from sync.api.auth import api_token_create
from sync.delivery import engine, holds
from sync.delivery.throttle import RedisThrottle, throttle
from sync.models import BreakerState, CircuitBreaker, JobState, QuotaHold, SyncJob
from sync.ops.config_services import config_override_set
from tests.conftest import drain, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT_EXCEEDED = {"status": 403, "code": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}


@pytest.fixture
def salesforce(live_server: Any) -> Connection:
    connection = mock_salesforce(live_server.url)
    config_override_set(values={"poll_interval": 0}, connection="salesforce", actor="test")  # no polls in the way
    return connection


def ingest(client: Any, *record_ids: str) -> None:
    token = api_token_create(username="platform")
    for record_id in record_ids:
        body = {"operation": "create", "record_id": record_id, "object_type": "Contact", "data": {"LastName": "L"}}
        response = client.post(
            "/v1/sync/", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}"
        )
        assert response.status_code == 202


def fault(staff_api: Any, **body: Any) -> None:
    assert staff_api.post("/v1/crms/mock/salesforce/faults", body, format="json").status_code == 201


def spend_the_daily_limit(client: Any, salesforce: Connection, staff_api: Any) -> datetime:
    """Two records meet the org's REQUEST_LIMIT_EXCEEDED; returns when it was heard."""
    ingest(client, "a", "b")
    fault(staff_api, calls=1, **LIMIT_EXCEEDED)
    heard = timezone.now()
    drain(salesforce, heard)
    return heard


def org_calls() -> int:
    return MockCall.objects.filter(system="salesforce", counted=True).count()


def hold_shown(staff_api: Any, connection: str = "salesforce") -> Any:
    """What GET /v1/sync/stats says of the connection's hold (read from the throttle's own store)."""
    rows = staff_api.get("/v1/sync/stats").json()["throttle"]
    return next(row for row in rows if row["connection"] == connection)["hold_until"]


def states() -> dict[str, str]:
    return dict(SyncJob.objects.values_list("record_id", "state"))


# --- (a) a spent daily limit is probed back --------------------------------------------------------


def test_after_the_daily_limit_one_probe_a_minute_later_finds_the_org_back_and_the_jobs_go_at_once(
    client, salesforce, staff_api
):
    heard = spend_the_daily_limit(client, salesforce, staff_api)

    waiting = SyncJob.objects.get(record_id="a")
    assert (waiting.state, waiting.last_error_code) == (JobState.RETRYING, "REQUEST_LIMIT_EXCEEDED")
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at >= heard + timedelta(seconds=900)
    assert CircuitBreaker.objects.get().state == BreakerState.OPEN and hold_shown(staff_api) is not None
    assert holds.probes_claim(now=heard + timedelta(seconds=59)) == []

    claimed = holds.probes_claim(now=heard + timedelta(seconds=61))
    other_dispatcher = holds.probes_claim(now=heard + timedelta(seconds=61))
    before = org_calls()
    (hold_id, owner) = claimed[0]
    outcome = holds.hold_probe(hold_id=hold_id, owner=owner)

    assert len(claimed) == 1 and other_dispatcher == []
    assert outcome == "lifted" and org_calls() == before + 1  # one cheap call
    assert not QuotaHold.objects.exists() and hold_shown(staff_api) is None
    assert CircuitBreaker.objects.get().state == BreakerState.CLOSED
    assert set(SyncJob.objects.values_list("next_attempt_at", flat=True)) == {None}  # due now, not in 15 minutes
    drain(salesforce)
    assert states() == {"a": JobState.SYNCED, "b": JobState.SYNCED}


def test_a_probe_that_fails_doubles_the_wait_for_the_next_up_to_fifteen_minutes(client, salesforce, staff_api):
    heard = spend_the_daily_limit(client, salesforce, staff_api)
    fault(staff_api, calls=10, **LIMIT_EXCEEDED)
    pushes = MockCall.objects.filter(path__contains="composite").count()
    at = heard + timedelta(seconds=61)  # the hold began as the answer came, a moment after
    waits = []

    for _ in range(6):
        (hold_id, owner) = holds.probes_claim(now=at)[0]
        assert holds.hold_probe(hold_id=hold_id, owner=owner, now=at) == "held"
        row = QuotaHold.objects.get()
        waits.append((row.probe_at - at).total_seconds())
        assert holds.probes_claim(now=row.probe_at - timedelta(seconds=1)) == []
        at = row.probe_at

    assert waits == [120, 240, 480, 900, 900, 900]
    assert row.probes == 6 and "REQUEST_LIMIT_EXCEEDED" in row.last_probe_error
    assert hold_shown(staff_api) is not None and CircuitBreaker.objects.get().state == BreakerState.OPEN
    assert MockCall.objects.filter(path__contains="composite").count() == pushes  # only probes reached the org
    assert set(states().values()) == {JobState.RETRYING}


def test_the_dispatcher_pass_probes_a_held_org_and_the_next_pass_sends_the_jobs(
    client, salesforce, staff_api, monkeypatch, settings
):
    settings.SYNC_FLUSH_INTERVAL = 0
    spend_the_daily_limit(client, salesforce, staff_api)
    QuotaHold.objects.update(probe_at=timezone.now())  # a minute has passed

    def run_now(name: str, *args: Any, **kwargs: Any) -> None:  # the worker runs the queued task at once
        import_string(name)(*args)

    monkeypatch.setattr(tasks, "async_task", run_now)
    call_command("sync_dispatch", "--once")

    assert not QuotaHold.objects.exists() and CircuitBreaker.objects.get().state == BreakerState.CLOSED
    call_command("sync_dispatch", "--once")
    assert states() == {"a": JobState.SYNCED, "b": JobState.SYNCED}


@pytest.mark.django_db
def test_a_probe_whose_task_was_lost_is_claimed_again_once_its_lease_runs_out():
    connection = Connection.objects.create(name="sf", kind="salesforce", quota_owner="org-lost")
    now = timezone.now()
    holds.hold_begin(connection=connection, pause=900, reason="REQUEST_LIMIT_EXCEEDED", now=now)

    first = holds.probes_claim(now=now + timedelta(seconds=60))
    during = holds.probes_claim(now=now + timedelta(seconds=60) + holds.PROBE_LEASE)
    after = holds.probes_claim(now=now + timedelta(seconds=61) + holds.PROBE_LEASE)

    assert len(first) == 1 and during == [] and len(after) == 1 and after[0][1] != first[0][1]
    assert holds.hold_probe(hold_id=first[0][0], owner=first[0][1]) == "gone"  # the lost task, back late


@pytest.mark.django_db
def test_a_probe_that_cannot_be_queued_gives_its_claim_back(monkeypatch):
    connection = Connection.objects.create(name="sf", kind="salesforce")
    holds.hold_begin(connection=connection, pause=900, reason="REQUEST_LIMIT_EXCEEDED", now=timezone.now())
    QuotaHold.objects.update(probe_at=timezone.now())

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks, "async_task", broker_down)

    assert tasks.probes_dispatch() == 0
    assert QuotaHold.objects.get().probe_owner == "" and len(holds.probes_claim(now=timezone.now())) == 1


# --- (b) staff resume a held connection --------------------------------------------------------------


def test_staff_resume_a_held_connection_through_the_api_and_its_jobs_go_at_once(client, salesforce, staff_api):
    spend_the_daily_limit(client, salesforce, staff_api)

    response = staff_api.post("/v1/sync/connections/salesforce/resume")

    assert response.status_code == 200
    assert response.json() == {
        "connection": "salesforce",
        "quota_key": "connection:salesforce",
        "connections": ["salesforce"],
        "hold_lifted": True,
        "breakers_closed": ["salesforce"],
        "jobs_due": 2,
        "polls_due": 0,
    }
    assert hold_shown(staff_api) is None and not QuotaHold.objects.exists()
    drain(salesforce)
    assert states() == {"a": JobState.SYNCED, "b": JobState.SYNCED}
    again = staff_api.post("/v1/sync/connections/salesforce/resume").json()
    assert (again["hold_lifted"], again["breakers_closed"], again["jobs_due"]) == (False, [], 0)


@pytest.mark.django_db
def test_resuming_one_connection_resumes_every_connection_sharing_its_allowance(staff_api):
    sales = Connection.objects.create(name="sf-sales", kind="salesforce", quota_owner="org-shared")
    support = Connection.objects.create(name="sf-support", kind="salesforce", quota_owner="org-shared")
    other = Connection.objects.create(name="sf-other", kind="salesforce", quota_owner="org-other")
    throttle().hold("org-shared", 900)
    holds.hold_begin(connection=sales, pause=900, reason="REQUEST_LIMIT_EXCEEDED")
    later = timezone.now() + timedelta(minutes=15)
    for target in (sales, support, other):
        SyncJob.objects.create(
            source="system_a",
            object_type="contact",
            record_id="r",
            target=target,
            state=JobState.RETRYING,
            last_error_code="THROTTLED",
            next_attempt_at=later,
            last_occurred_at=timezone.now(),
        )

    body = staff_api.post("/v1/sync/connections/sf-support/resume").json()

    assert body["connections"] == ["sf-sales", "sf-support"] and body["hold_lifted"] and body["jobs_due"] == 2
    due = {job.target.name for job in SyncJob.objects.filter(next_attempt_at__isnull=True)}
    assert due == {"sf-sales", "sf-support"}  # sf-other has an allowance of its own
    assert throttle().acquire("org-shared", 0, 1) == 0.0


@pytest.mark.django_db
def test_resume_is_for_staff_and_names_an_existing_connection(api, staff_api):
    Connection.objects.create(name="sf", kind="salesforce")

    refused = api.post("/v1/sync/connections/sf/resume")
    unknown = staff_api.post("/v1/sync/connections/nope/resume")

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "No connection named 'nope'."


@pytest.mark.django_db
def test_the_resume_endpoint_is_in_the_published_schema(staff_api):
    schema = staff_api.get("/v1/schema/?format=json").json()

    operation = schema["paths"]["/v1/sync/connections/{name}/resume"]["post"]
    assert operation["operationId"] == "sync_connection_resume"
    assert {"200", "403", "404"} <= set(operation["responses"])


def test_staff_resume_a_held_connection_from_the_admin(client, salesforce, staff_api, admin_client):
    spend_the_daily_limit(client, salesforce, staff_api)
    breaker = CircuitBreaker.objects.get()

    page = admin_client.post(
        "/admin/sync/circuitbreaker/", {"action": "resume_connections", "_selected_action": [breaker.pk]}, follow=True
    )

    assert "Resumed salesforce: hold lifted; breakers closed: salesforce; 2 waiting job(s)" in page.content.decode()
    assert CircuitBreaker.objects.get().state == BreakerState.CLOSED and not QuotaHold.objects.exists()
    assert hold_shown(staff_api) is None


def test_held_quota_owners_are_listed_in_the_admin_and_can_be_resumed_there(
    client, salesforce, staff_api, admin_client
):
    spend_the_daily_limit(client, salesforce, staff_api)
    hold = QuotaHold.objects.get()

    listed = admin_client.get("/admin/sync/quotahold/").content.decode()
    page = admin_client.post(
        "/admin/sync/quotahold/", {"action": "resume_connections", "_selected_action": [hold.pk]}, follow=True
    )

    assert "connection:salesforce" in listed
    assert "Resumed salesforce: hold lifted" in page.content.decode() and not QuotaHold.objects.exists()


@pytest.mark.redis
@pytest.mark.django_db
def test_resuming_lifts_a_hold_kept_in_redis():
    from django_redis import get_redis_connection

    Connection.objects.create(name="sf-redis", kind="salesforce", quota_owner="org-holds-redis")
    redis = get_redis_connection("default")
    redis.delete("recordsync:throttle-hold:org-holds-redis", "recordsync:throttle-cap:org-holds-redis")
    RedisThrottle().hold("org-holds-redis", 900)
    assert RedisThrottle().acquire("org-holds-redis", 0, 1) > 800

    resumed = holds.connection_resume(name="sf-redis", actor="ops")

    assert resumed.hold_lifted and RedisThrottle().acquire("org-holds-redis", 0, 1) == 0.0
    assert not RedisThrottle().release("org-holds-redis")  # nothing left to lift


# --- (c) a cap parks jobs briefly and lets them go when usage falls ---------------------------------


def answer(headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.headers.update(headers)
    response._content = b"{}"
    return response


def parked_job(connection: Connection, minutes: float = 15) -> SyncJob:
    """A job the throttle handed back, waiting `minutes`."""
    return SyncJob.objects.create(
        source="system_a",
        object_type="Contact",
        record_id="r",
        target=connection,
        state=JobState.RETRYING,
        last_error_code="THROTTLED",
        next_attempt_at=timezone.now() + timedelta(minutes=minutes),
        last_occurred_at=timezone.now(),
    )


def test_a_job_held_back_near_the_daily_cap_waits_at_most_fifteen_minutes_not_the_whole_spread(client):
    connection = mock_salesforce("http://127.0.0.1:9", quota_owner="org-capped")  # never reached: the cap refuses
    observe = holds.observer(connection, throttle())
    assert observe is not None
    observe(answer({"Sforce-Limit-Info": "api-usage=4990/5000"}))  # 10 calls left today: one per 2.4 hours
    throttle().acquire("org-capped", 0, 1)  # this spell's one call is spent
    ingest(client, "r")
    now = timezone.now()

    drain(connection, now)

    job = SyncJob.objects.get()
    assert (job.state, job.attempts, job.last_error_code) == (JobState.RETRYING, 0, "THROTTLED")
    assert job.next_attempt_at is not None
    assert timedelta(seconds=899) <= job.next_attempt_at - now <= timedelta(seconds=900)  # not 2.4 hours


@pytest.mark.django_db
def test_an_answer_showing_room_drops_the_cap_and_the_jobs_it_parked_are_due_at_once(staff_api):
    connection = Connection.objects.create(name="sf", kind="salesforce", quota_owner="org-room")
    observe = holds.observer(connection, throttle())
    assert observe is not None
    observe(answer({"Sforce-Limit-Info": "api-usage=4990/5000"}))
    parked = parked_job(connection)

    observe(answer({"Sforce-Limit-Info": "api-usage=4600/5000"}))  # still past 90%: still capped
    still = SyncJob.objects.get(pk=parked.pk).next_attempt_at
    observe(answer({"Sforce-Limit-Info": "api-usage=4400/5000"}))  # the rolling day freed calls up

    cap = next(row for row in staff_api.get("/v1/sync/stats").json()["throttle"] if row["connection"] == "sf")["cap"]
    assert still is not None and cap is None
    assert engine.batches_claim(connection=connection, now=timezone.now(), force=True) == [[parked.pk]]


@pytest.mark.django_db
def test_an_answer_showing_room_after_the_cap_lapsed_still_wakes_the_jobs_it_parked(monkeypatch):
    from sync.delivery.throttle import DatabaseThrottle

    now = [2_000_000.0]
    monkeypatch.setattr(DatabaseThrottle, "clock", staticmethod(lambda: now[0]))
    connection = Connection.objects.create(name="sf", kind="salesforce", quota_owner="org-lapsed")
    observe = holds.observer(connection, DatabaseThrottle())
    assert observe is not None
    observe(answer({"Sforce-Limit-Info": "api-usage=4990/5000"}))
    parked = parked_job(connection)
    now[0] += 120  # no answer renewed the cap: it lapsed a minute ago, the job still waits

    observe(answer({"Sforce-Limit-Info": "api-usage=4000/5000"}))

    assert SyncJob.objects.get(pk=parked.pk).next_attempt_at is None


@pytest.mark.redis
@pytest.mark.django_db
def test_redis_remembers_a_lapsed_cap_until_the_jobs_it_parked_are_due():
    from django_redis import get_redis_connection

    from sync.delivery.throttle import redis_capped_key, redis_keys

    redis = get_redis_connection("default")
    keys = [*redis_keys("org-lapsed-redis"), redis_capped_key("org-lapsed-redis")]
    redis.delete(*keys)
    connection = Connection.objects.create(name="sf", kind="salesforce", quota_owner="org-lapsed-redis")
    observe = holds.observer(connection, RedisThrottle())
    assert observe is not None
    observe(answer({"Sforce-Limit-Info": "api-usage=4990/5000"}))
    parked = parked_job(connection)
    assert 899_000 < redis.pttl(redis_capped_key("org-lapsed-redis")) <= 900_000
    redis.delete(redis_keys("org-lapsed-redis")[2])  # the cap's own minute ran out

    observe(answer({"Sforce-Limit-Info": "api-usage=4000/5000"}))

    assert SyncJob.objects.get(pk=parked.pk).next_attempt_at is None
    assert not redis.exists(redis_capped_key("org-lapsed-redis"))
    redis.delete(*keys)


def test_a_push_whose_answer_shows_room_lets_the_jobs_the_cap_parked_go(client, salesforce, staff_api):
    """End to end: the mock org's own Sforce-Limit-Info (a few calls of 15,000) ends a cap set earlier."""
    observe = holds.observer(salesforce, throttle())
    assert observe is not None
    ingest(client, "warm")
    drain(salesforce)  # logged in: the login is not the call the cap allows
    observe(answer({"Sforce-Limit-Info": "api-usage=4990/5000"}))  # one call per 2.4 hours, none spent yet
    ingest(client, "a", "b")
    SyncJob.objects.filter(record_id="b").update(
        state=JobState.RETRYING, last_error_code="THROTTLED", next_attempt_at=timezone.now() + timedelta(seconds=60)
    )

    drain(salesforce)  # "a" takes the one call; its answer shows room
    drain(salesforce)  # "b" no longer waits out its minute

    assert states() == {"warm": JobState.SYNCED, "a": JobState.SYNCED, "b": JobState.SYNCED}
    stats = staff_api.get("/v1/sync/stats").json()["throttle"]
    assert next(row for row in stats if row["connection"] == "salesforce")["cap"] is None


@pytest.mark.redis
def test_redis_caps_are_dropped_and_holds_released_on_request():
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    keys = ["recordsync:throttle-hold:org-uncap", "recordsync:throttle-cap:org-uncap"]
    redis.delete(*keys)
    backend = RedisThrottle()
    backend.cap("org-uncap", 1, 8640, seconds=60)
    backend.acquire("org-uncap", 0, 1)
    assert backend.acquire("org-uncap", 0, 1) > 8000

    dropped, again = backend.uncap("org-uncap"), backend.uncap("org-uncap")

    assert (dropped, again) == (True, False) and backend.acquire("org-uncap", 0, 1) == 0.0
    redis.delete(*keys, "recordsync:throttle:org-uncap")


@pytest.mark.django_db
def test_resuming_makes_polls_that_were_backing_off_due_at_once():
    from sync.inbound import changes as inbound
    from sync.models import InboundCursor

    connection = Connection.objects.create(name="sf", kind="salesforce")
    later = timezone.now() + timedelta(minutes=5)
    InboundCursor.objects.create(connection=connection, object_type="Contact", failures=4, retry_at=later)
    assert "Contact" not in [claim[1] for claim in inbound.polls_claim(now=timezone.now())]

    resumed = holds.connection_resume(name="sf", actor="ops")

    assert resumed.polls_due == 1
    assert "Contact" in [claim[1] for claim in inbound.polls_claim(now=timezone.now())]
