"""Each figure of sync.ops.stats, proved with real rows (and, for Redis, a real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from crms.models import Connection
from sync.delivery import config
from sync.delivery.throttle import DatabaseThrottle, RedisThrottle, redis_keys
from sync.models import (
    AttemptMinute,
    AttemptOutcome,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ConfigOverride,
    JobState,
    SyncAttempt,
    SyncConflict,
    SyncEvent,
    SyncJob,
    ThrottleCall,
    ThrottleLimit,
)
from sync.ops import stats
from sync.ops.selectors import queue_lag

NOW = datetime(2026, 3, 1, 12, 30, 20, tzinfo=UTC)


def _connection(name: str, **fields: Any) -> Connection:
    return Connection.objects.create(name=name, kind="salesforce", **fields)


def _event(
    record_id: str, *, payload: dict[str, Any] | None = None, routing: dict[str, Any] | None = None
) -> SyncEvent:
    return SyncEvent.objects.create(
        idempotency_key=uuid.uuid4().hex,
        request_hash="0" * 64,
        source="system_a",
        operation="update",
        object_type="contact",
        record_id=record_id,
        payload=payload,
        occurred_at=NOW - timedelta(hours=1),
        received_at=NOW - timedelta(hours=1),
        routing=routing or {},
    )


def _job(target: Connection, record_id: str, state: str, *, age: float = 0.0, **fields: Any) -> SyncJob:
    return SyncJob.objects.create(
        source=fields.pop("source", "system_a"),
        object_type="contact",
        record_id=record_id,
        target=target,
        state=state,
        last_occurred_at=NOW,
        updated_at=NOW - timedelta(seconds=age),
        **fields,
    )


def _attempts(job: SyncJob, *finished: tuple[datetime | None, str]) -> None:
    SyncAttempt.objects.bulk_create(
        SyncAttempt(job=job, version=1, started_at=(at or NOW) - timedelta(seconds=1), finished_at=at, outcome=outcome)
        for at, outcome in finished
    )


@pytest.mark.django_db
def test_job_counts_count_every_state_per_target_and_in_total() -> None:
    sf, outreach, idle = _connection("sf"), _connection("outreach"), _connection("idle")
    for i, state in enumerate([JobState.SYNCED, JobState.SYNCED, JobState.FAILED, JobState.PENDING]):
        _job(sf, f"c-{i}", state)
    _job(outreach, "c-0", JobState.HELD)

    counts = stats.job_counts()

    assert counts["total"] == 5
    assert counts["by_state"]["synced"] == 2 and counts["by_state"]["failed"] == 1
    assert counts["by_state"]["held"] == 1 and counts["by_state"]["pending"] == 1
    assert counts["by_state"]["in_flight"] == 0 and set(counts["by_state"]) == set(JobState.values)
    assert counts["by_target"]["sf"] == {**dict.fromkeys(JobState.values, 0), "synced": 2, "failed": 1, "pending": 1}
    assert counts["by_target"]["outreach"]["held"] == 1
    assert counts["by_target"][idle.name] == dict.fromkeys(JobState.values, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "counted",
    [[], [NOW], [NOW - timedelta(minutes=5)], [NOW - timedelta(hours=3), NOW - timedelta(minutes=1)], [NOW, NOW]],
    ids=["never counted", "counted now", "counted 5 minutes ago", "counted twice, 3 hours apart", "counted twice"],
)
def test_throughput_counts_successes_and_errors_by_the_minute_and_hour_they_finished(counted: list[datetime]) -> None:
    """The same figures whether the cluster counted the minutes (when: `counted`) or the page counts them."""
    job = _job(_connection("sf"), "c-1", JobState.SYNCED)
    _attempts(
        job,
        (datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC), AttemptOutcome.SUCCESS),  # the minute under way
        (datetime(2026, 3, 1, 12, 30, 19, tzinfo=UTC), AttemptOutcome.SUCCESS),
        (datetime(2026, 3, 1, 12, 29, 59, tzinfo=UTC), AttemptOutcome.ERROR),
        (datetime(2026, 3, 1, 11, 31, 0, tzinfo=UTC), AttemptOutcome.ERROR),  # the first minute shown
        (datetime(2026, 3, 1, 11, 30, 59, tzinfo=UTC), AttemptOutcome.SUCCESS),  # an hour ago: hourly only
        (datetime(2026, 2, 28, 13, 0, 0, tzinfo=UTC), AttemptOutcome.SUCCESS),  # the first hour shown
        (datetime(2026, 2, 28, 12, 59, 59, tzinfo=UTC), AttemptOutcome.ERROR),  # too old for either
        (datetime(2026, 3, 1, 12, 30, 6, tzinfo=UTC), AttemptOutcome.SKIPPED),  # nothing was sent
        (None, ""),  # still running
        (datetime(2026, 3, 1, 12, 30, 21, tzinfo=UTC), AttemptOutcome.SUCCESS),  # after `now`
    )
    for moment in counted:
        stats.attempt_minutes_refresh(now=moment)

    found = stats.throughput(now=NOW)

    minutes, hours = found["per_minute"], found["per_hour"]
    assert len(minutes) == 60 and len(hours) == 24
    assert minutes[0]["start"] == datetime(2026, 3, 1, 11, 31, tzinfo=UTC)
    assert minutes[-1] == {"start": datetime(2026, 3, 1, 12, 30, tzinfo=UTC), "synced": 2, "failed": 0}
    assert minutes[-2] == {"start": datetime(2026, 3, 1, 12, 29, tzinfo=UTC), "synced": 0, "failed": 1}
    assert minutes[0]["failed"] == 1 and minutes[0]["synced"] == 0
    assert sum(m["synced"] for m in minutes) == 2 and sum(m["failed"] for m in minutes) == 2
    assert hours[0] == {"start": datetime(2026, 2, 28, 13, tzinfo=UTC), "synced": 1, "failed": 0}
    assert hours[-1] == {"start": datetime(2026, 3, 1, 12, tzinfo=UTC), "synced": 2, "failed": 1}
    assert hours[-2] == {"start": datetime(2026, 3, 1, 11, tzinfo=UTC), "synced": 1, "failed": 1}
    assert sum(h["synced"] for h in hours) == 4 and sum(h["failed"] for h in hours) == 2


@pytest.mark.django_db
def test_the_cluster_counts_each_finished_minute_once_a_minute_and_a_late_attempt_the_next() -> None:
    from django.utils.module_loading import import_string
    from django_q.models import Schedule

    from sync import tasks

    job = _job(_connection("sf"), "c-1", JobState.SYNCED)
    _attempts(job, (NOW - timedelta(minutes=3), AttemptOutcome.SUCCESS))

    assert stats.attempt_minutes_refresh(now=NOW) == 24 * 60 - 30  # from the first hour shown to NOW's minute
    assert stats.attempt_minutes_refresh(now=NOW) == 15  # the last fifteen again, nothing new
    _attempts(job, (NOW - timedelta(minutes=2), AttemptOutcome.ERROR))  # committed after the count
    assert stats.throughput(now=NOW)["per_minute"][-3]["failed"] == 0  # the count is a minute behind it
    stats.attempt_minutes_refresh(now=NOW + timedelta(minutes=1))

    minutes = stats.throughput(now=NOW + timedelta(minutes=1))["per_minute"]
    assert [(m["synced"], m["failed"]) for m in minutes[-5:-1]] == [(1, 0), (0, 1), (0, 0), (0, 0)]
    stats.attempt_minutes_refresh(now=NOW + timedelta(hours=1))  # a clock an hour ahead counts minutes to come
    _attempts(job, (NOW + timedelta(minutes=30), AttemptOutcome.SUCCESS))
    stats.attempt_minutes_refresh(now=NOW + timedelta(minutes=31))  # the right clock counts them again
    assert stats.throughput(now=NOW + timedelta(minutes=31))["per_minute"][-2]["synced"] == 1
    stats.attempt_minutes_refresh(now=NOW + timedelta(days=2))  # a day with none: nothing older is kept
    assert not AttemptMinute.objects.filter(minute__lt=NOW + timedelta(days=1)).exists()
    row = Schedule.objects.get(name="sync-attempt-minutes")
    assert (row.func, row.schedule_type, row.minutes, row.repeats) == ("sync.tasks.attempt_minutes_refresh", "I", 1, -1)
    assert import_string(row.func) is tasks.attempt_minutes_refresh


@pytest.mark.django_db
def test_lag_is_the_age_of_each_connections_oldest_due_job() -> None:
    sf, outreach, quiet = _connection("sf"), _connection("outreach"), _connection("quiet")
    off = _connection("off", enabled=False)
    _job(sf, "c-1", JobState.PENDING, age=90)
    _job(sf, "c-2", JobState.RETRYING, age=30, next_attempt_at=NOW - timedelta(seconds=1))
    _job(sf, "c-3", JobState.RETRYING, age=500, next_attempt_at=NOW + timedelta(seconds=60))  # not due yet
    _job(sf, "c-4", JobState.FAILED, age=900)
    _job(sf, "c-5", JobState.IN_FLIGHT, age=800)  # on its way: not due
    _job(outreach, "c-1", JobState.PENDING, age=12.5)
    _job(off, "c-1", JobState.PENDING, age=4000)

    by_name = {row["connection"]: row for row in stats.lag(now=NOW)}

    assert by_name["sf"] == {
        "connection": "sf",
        "enabled": True,
        "due": 2,
        "lag_seconds": 90.0,
        "oldest_due_since": NOW - timedelta(seconds=90),
    }
    assert by_name["outreach"]["lag_seconds"] == 12.5 and by_name["outreach"]["due"] == 1
    assert by_name[quiet.name] == {
        "connection": "quiet",
        "enabled": True,
        "due": 0,
        "lag_seconds": 0.0,
        "oldest_due_since": None,
    }
    assert by_name["off"]["enabled"] is False and by_name["off"]["lag_seconds"] == 4000.0
    # The whole queue's lag (what the dispatcher reports) is the worst enabled connection's.
    enabled = [row for row in by_name.values() if row["enabled"]]
    assert queue_lag(NOW) == (max(r["lag_seconds"] for r in enabled), sum(r["due"] for r in enabled))


@pytest.fixture
def limited() -> dict[str, Connection]:
    """Two connections sharing one org's allowance, one of their own, one without a limit: 10 calls a minute."""
    found = {
        "sf": _connection("sf", quota_owner="org-1"),
        "sf-eu": _connection("sf-eu", quota_owner="org-1"),
        "outreach": _connection("outreach"),
        "files": _connection("files"),
    }
    ConfigOverride.objects.create(scope="global", values={"rate_limit_calls": 10, "rate_limit_window": 60})
    ConfigOverride.objects.create(scope="connection:files", connection=found["files"], values={"rate_limit_calls": 0})
    config.forget()
    return found


@pytest.mark.django_db
def test_throttle_use_counts_the_database_windows_calls_per_quota_owner(limited: dict[str, Connection]) -> None:
    throttle = DatabaseThrottle()
    throttle.clock = lambda: (NOW - timedelta(seconds=5)).timestamp()
    for _ in range(2):
        assert throttle.acquire("org-1", 10, 60.01) == 0.0  # the throttle itself records the calls
    ThrottleCall.objects.bulk_create(
        [
            ThrottleCall(key="org-1", at=NOW - timedelta(seconds=60.005)),  # inside the enforced window (60 s + 10 ms)
            ThrottleCall(key="org-1", at=NOW - timedelta(seconds=60.02)),  # gone from it
            ThrottleCall(key="org-1", at=NOW + timedelta(seconds=1), ticket="t"),  # in flight: at the latest it arrives
            ThrottleCall(key="connection:outreach", at=NOW - timedelta(seconds=1)),
        ]
    )
    ThrottleLimit.objects.create(key="org-1", hold_until=NOW - timedelta(seconds=1))  # a hold already over
    ThrottleLimit.objects.create(
        key="connection:outreach",
        hold_until=NOW + timedelta(seconds=30),
        cap_calls=5,
        cap_seconds=60,
        cap_until=NOW + timedelta(seconds=45),
    )

    by_name = {row["connection"]: row for row in stats.throttle_use(now=NOW, backend="database")}

    assert by_name["sf"] == {
        "connection": "sf",
        "key": "org-1",
        "shared_with": ["sf-eu"],
        "limit": 10,
        "window_seconds": 60.01,
        "used": 4,
        "percent": 40.0,
        "measured": "database",
        "note": "",
        "hold_until": None,
        "cap": None,
    }
    assert by_name["sf-eu"]["used"] == 4 and by_name["sf-eu"]["shared_with"] == ["sf"]
    assert by_name["outreach"]["used"] == 1 and by_name["outreach"]["percent"] == 10.0
    assert by_name["outreach"]["hold_until"] == NOW + timedelta(seconds=30)
    assert by_name["outreach"]["cap"] == {"calls": 5, "per_seconds": 60.0, "until": NOW + timedelta(seconds=45)}
    files = by_name["files"]
    assert files["limit"] == 0 and files["used"] is None and files["percent"] is None
    assert files["measured"] == "unknown" and "not counted" in files["note"]


@pytest.fixture
def redis_keys_cleared() -> Iterator[str]:
    owner = f"stats-test-{uuid.uuid4().hex[:8]}"
    yield owner
    stats.redis_connection().delete(*redis_keys(owner))


@pytest.mark.redis
@pytest.mark.django_db
def test_throttle_use_counts_the_redis_windows_calls(redis_keys_cleared: str) -> None:
    sf = _connection("sf", quota_owner=redis_keys_cleared)
    ConfigOverride.objects.create(scope="global", values={"rate_limit_calls": 8, "rate_limit_window": 60})
    config.forget()
    throttle = RedisThrottle()
    for _ in range(3):
        assert throttle.acquire(redis_keys_cleared, 8, 60.01) == 0.0
    throttle.hold(redis_keys_cleared, 30)
    throttle.cap(redis_keys_cleared, 5, 60, seconds=45)

    (row,) = stats.throttle_use(now=NOW, connections=[sf], backend="redis")

    assert (row["used"], row["percent"], row["measured"], row["limit"]) == (3, 37.5, "redis", 8)
    assert row["hold_until"] is not None and row["cap"] is not None
    seconds, micros = stats.redis_connection().time()
    redis_now = datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, tz=UTC)
    assert 25 < (row["hold_until"] - redis_now).total_seconds() <= 30
    assert row["cap"]["calls"] == 5 and row["cap"]["per_seconds"] == 60.0
    assert row["cap"]["until"] is not None and 40 < (row["cap"]["until"] - redis_now).total_seconds() <= 45


@pytest.mark.django_db
def test_throttle_use_is_unknown_when_redis_cannot_be_read(
    limited: dict[str, Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "redis_connection", lambda: redis.Redis(port=1, socket_connect_timeout=0.5))

    rows = stats.throttle_use(now=NOW, backend="redis")

    assert len(rows) == 4
    assert all(r["used"] is None and r["percent"] is None and r["measured"] == "unknown" for r in rows)
    assert all(r["note"] == "Redis unreachable (ConnectionError)" for r in rows)


@pytest.mark.django_db
def test_breakers_show_each_state_and_since_when() -> None:
    _connection("fresh")
    down, healed = _connection("down"), _connection("healed")
    CircuitBreaker.objects.create(
        connection=down,
        state=BreakerState.OPEN,
        failures=7,
        last_error="503 Unavailable",
        opened_at=NOW - timedelta(seconds=60),
    )
    CircuitBreaker.objects.create(connection=healed, state=BreakerState.CLOSED)
    history = [
        (down, 600, "closed", "open"),
        (down, 300, "open", "half_open"),
        (down, 60, "half_open", "open"),
        (healed, 900, "closed", "open"),
        (healed, 100, "half_open", "closed"),
    ]
    BreakerTransition.objects.bulk_create(
        BreakerTransition(connection=c, at=NOW - timedelta(seconds=ago), from_state=old, to_state=new)
        for c, ago, old, new in history
    )

    by_name = {row["connection"]: row for row in stats.breakers()}

    assert by_name["fresh"] == {
        "connection": "fresh",
        "state": "closed",
        "failures": 0,
        "since": None,
        "opened_at": None,
        "last_error": "",
    }
    # Down since it first left closed, though each failed probe moved opened_at.
    assert by_name["down"] == {
        "connection": "down",
        "state": "open",
        "failures": 7,
        "since": NOW - timedelta(seconds=600),
        "opened_at": NOW - timedelta(seconds=60),
        "last_error": "503 Unavailable",
    }
    assert by_name["healed"]["state"] == "closed" and by_name["healed"]["since"] == NOW - timedelta(seconds=100)


@pytest.mark.django_db
def test_issue_groups_list_failed_and_held_jobs_by_error_with_the_payload_and_the_conflict() -> None:
    sf, outreach, system_a = _connection("sf"), _connection("outreach"), _connection("system_a")
    sf_payload = {"object": "Contact", "fields": {"Email": "ada@example.com"}}
    routed = _event("c-1", payload={"email": "ada@example.com"}, routing={"payloads": {"sf": sf_payload}})
    plain = _event("c-2", payload={"email": "bob@example.com"})
    for record, target, age, event in [("c-1", sf, 300, routed), ("c-2", sf, 100, plain), ("c-3", outreach, 200, None)]:
        _job(
            target,
            record,
            JobState.FAILED,
            age=age,
            last_event=event,
            attempts=5,
            last_error_code="HTTP_400",
            last_error_message=f"{record} refused",
            last_error_permanent=True,
        )
    _job(sf, "c-4", JobState.FAILED, age=50, last_error_code="REQUIRED_FIELD_MISSING", last_error_message="LastName")
    conflict = SyncConflict.objects.create(
        record_id="c-5",
        object_type="contact",
        connection=outreach,
        external_object="prospect",
        external_id="p-5",
        policy="manual",
    )
    _job(outreach, "c-5", JobState.HELD, age=40, last_error_code="CONFLICT_HELD", last_error_message="waits")
    _job(system_a, "c-5", JobState.HELD, age=40, source="outreach", last_error_code="CONFLICT_HELD")
    _job(sf, "c-6", JobState.RETRYING, age=999, last_error_code="HTTP_503")  # still being retried: not an issue
    _job(sf, "c-7", JobState.SYNCED, age=999)

    groups = stats.issue_groups(per_group=2)

    assert [(g["code"], g["count"]) for g in groups] == [
        ("HTTP_400", 3),
        ("CONFLICT_HELD", 2),
        ("REQUIRED_FIELD_MISSING", 1),
    ]
    refused = groups[0]
    assert refused["states"] == {"failed": 3} and refused["targets"] == ["outreach", "sf"]
    assert refused["since"] == NOW - timedelta(seconds=300) and refused["latest"] == NOW - timedelta(seconds=100)
    assert [j["record_id"] for j in refused["jobs"]] == ["c-1", "c-3"]  # the two stuck longest
    first = refused["jobs"][0]
    assert first["payload"] == {"Email": "ada@example.com"} and first["operation"] == "update"
    assert first["error_message"] == "c-1 refused" and first["permanent"] is True and first["attempts"] == 5
    assert first["received_at"] == NOW - timedelta(hours=1) and first["since"] == NOW - timedelta(seconds=300)
    assert refused["jobs"][1]["payload"] is None and refused["jobs"][1]["operation"] is None  # its event is gone
    held = groups[1]
    assert held["states"] == {"held": 2} and {j["conflict_id"] for j in held["jobs"]} == {conflict.pk}
    assert stats.issue_groups(per_group=5)[0]["jobs"][2]["payload"] == {"email": "bob@example.com"}  # no rules: as sent


def _busy_world(prefix: str, connections: int) -> None:
    """Connections with jobs in every state (some failed, some held), attempts, throttle calls, breakers."""
    for n in range(connections):
        target = _connection(f"{prefix}{n}", quota_owner="shared" if n % 2 else "")
        ConfigOverride.objects.create(
            scope=f"connection:{target.name}", connection=target, values={"rate_limit_calls": 5}
        )
        CircuitBreaker.objects.create(connection=target, state=BreakerState.OPEN, opened_at=NOW)
        BreakerTransition.objects.create(connection=target, at=NOW, from_state="closed", to_state="open")
        ThrottleCall.objects.create(key=f"connection:{target.name}", at=NOW)
        SyncConflict.objects.create(
            record_id=f"{prefix}{n}-held",
            object_type="contact",
            connection=target,
            external_object="x",
            external_id=f"x{n}",
            policy="manual",
        )
        for i, state in enumerate(JobState.values):
            record = f"{prefix}{n}-{state}"
            job = _job(target, record, state, age=i, last_event=_event(record), last_error_code=f"E{i % 3}")
            _attempts(job, (NOW - timedelta(minutes=i), AttemptOutcome.SUCCESS), (NOW, AttemptOutcome.ERROR))


def _queries() -> int:
    config.forget()
    with CaptureQueriesContext(db) as captured:
        stats.sync_stats(now=NOW)
        stats.issue_groups()
    return len(captured.captured_queries)


@pytest.mark.django_db
def test_the_figures_take_the_same_few_queries_however_many_connections_and_rows() -> None:
    _busy_world("a", 1)
    few = _queries()
    _busy_world("b", 6)

    assert _queries() == few <= 12


@pytest.mark.django_db
def test_finished_jobs_are_counted_once_a_minute_and_open_ones_on_every_read() -> None:
    from django.utils.module_loading import import_string
    from django_q.models import Schedule

    from sync import tasks

    target = Connection.objects.create(name="sf", kind="salesforce")
    for n in range(3):
        _job(target, f"done-{n}", JobState.SYNCED)
    _job(target, "skip-0", JobState.SKIPPED)
    live = stats.job_counts(now=NOW)
    assert (live["by_target"]["sf"]["synced"], live["finished_counted_at"]) == (3, None)  # no count yet: counted now

    assert stats.job_counts_refresh(now=NOW) == 2  # (sf, synced) and (sf, skipped)
    for n in range(2):
        _job(target, f"later-{n}", JobState.SYNCED)
    _job(target, "open-0", JobState.PENDING)
    _job(target, "open-1", JobState.FAILED)
    counts = stats.job_counts(now=NOW + timedelta(minutes=1))

    assert counts["by_target"]["sf"]["synced"] == 3  # as counted a minute ago
    assert (counts["by_state"]["pending"], counts["by_state"]["failed"], counts["by_state"]["skipped"]) == (1, 1, 1)
    assert counts["finished_counted_at"] == NOW and counts["total"] == 6
    stale = stats.job_counts(now=NOW + stats.COUNTS_FRESH_FOR + timedelta(seconds=1))
    assert (stale["by_state"]["synced"], stale["finished_counted_at"]) == (5, None)  # too old: counted now
    stats.job_counts_refresh(now=NOW + timedelta(minutes=2))
    assert stats.job_counts(now=NOW + timedelta(minutes=2))["by_state"]["synced"] == 5
    row = Schedule.objects.get(name="sync-job-counts")
    assert (row.func, row.schedule_type, row.minutes, row.repeats) == ("sync.tasks.job_counts_refresh", "I", 1, -1)
    assert import_string(row.func) is tasks.job_counts_refresh
