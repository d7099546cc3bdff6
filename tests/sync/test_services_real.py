"""Behaviour that only real servers can show: concurrent ingest on PostgreSQL, Redis going away."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection
from django.db.models import Max
from django.test import Client, override_settings
from django_q.brokers import get_broker

from crms.models import Connection
from sync import tasks, transitions
from sync.api.auth import ANY_SOURCE, api_token_create
from sync.models import JobState, SyncEvent, SyncJob, TokenScope

EVENT = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": {"email": "a@example.com"}}
# A port nothing listens on: connection refused at once, as when Redis is down.
DEAD_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
    }
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_identical_requests_create_one_event():
    Connection.objects.create(name="salesforce", kind="salesforce")
    token = api_token_create(username="platform")
    start = threading.Barrier(50)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def send() -> None:
        client = Client(HTTP_AUTHORIZATION=f"Token {token}")
        start.wait()
        try:
            response = client.post(
                "/v1/sync/", data=json.dumps(EVENT), content_type="application/json", HTTP_IDEMPOTENCY_KEY="same"
            )
            with lock:
                answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _ in answers] == [202] * 50
    assert len({body["event_id"] for _, body in answers}) == 1
    assert SyncEvent.objects.count() == 1
    job = SyncJob.objects.get()
    assert (job.version, job.state) == (1, JobState.PENDING)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_lists_touching_the_same_records_all_land():
    Connection.objects.create(name="salesforce", kind="salesforce")
    token = api_token_create(username="platform")
    records = [{**EVENT, "record_id": f"c-{i}"} for i in range(100)]
    statuses: list[int] = []

    def send(items: list[dict[str, Any]]) -> None:
        try:
            response = Client(HTTP_AUTHORIZATION=f"Token {token}").post(
                "/v1/sync/", data=json.dumps(items), content_type="application/json"
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    # Same records, opposite orders: without one lock order these would deadlock.
    threads = [threading.Thread(target=send, args=(records if i % 2 else records[::-1],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [202] * 6
    assert SyncEvent.objects.count() == 600
    # Every job holds its record's newest change. Each request stamps its events when it runs, so a
    # request that commits after a newer one brings older changes: those are superseded (stored,
    # never applied) and do not bump the version; every other event does.
    newest = {
        row["record_id"]: row["latest"]
        for row in SyncEvent.objects.values("record_id").annotate(latest=Max("occurred_at"))
    }
    jobs = list(SyncJob.objects.select_related("last_event"))
    assert len(jobs) == 100
    assert all(job.last_event is not None and job.last_event.occurred_at == newest[job.record_id] for job in jobs)
    assert all(1 <= job.version <= 6 for job in jobs)


@pytest.mark.redis
@pytest.mark.django_db
def test_events_are_accepted_while_redis_is_down_and_queued_once_it_is_back(
    api, connections, django_capture_on_commit_callbacks
):
    with override_settings(CACHES=DEAD_REDIS), django_capture_on_commit_callbacks(execute=True):
        response = api.post("/v1/sync/", data=json.dumps(EVENT), content_type="application/json")
        ready = api.get("/readyz")

    assert response.status_code == 202
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "up", "broker": "down", "cache": "down"}
    assert SyncJob.objects.filter(state=JobState.PENDING).count() == 2

    broker = get_broker()
    broker.purge_queue()
    SyncJob.objects.update(updated_at=SyncJob.objects.get(target__name="salesforce").created_at.replace(year=2000))
    assert tasks.sweep() == 2
    assert broker.queue_size() == 2
    broker.purge_queue()


@pytest.mark.redis
def test_the_broker_and_cache_are_redis_when_redis_url_is_set(settings):
    assert settings.Q_CLUSTER["django_redis"] == "default"
    assert type(get_broker()).__name__ == "Redis"
    assert get_broker().ping()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_without_a_client_key_the_event_and_its_jobs_are_one_statement():
    Connection.objects.create(name="salesforce", kind="salesforce")
    Connection.objects.create(name="outreach", kind="outreach")
    token = api_token_create(username="platform", scopes=TokenScope.values, sources=[ANY_SOURCE])  # posts as salesforce
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")

    statements: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    # (CaptureQueriesContext misses these: Django clears the query log when a request starts.)
    with connection.execute_wrapper(record):
        response = client.post("/v1/sync/", data=json.dumps(EVENT), content_type="application/json")
    moved = {**EVENT, "record_id": "c-2", "source": "salesforce", "targets": ["outreach"]}
    nowhere = client.post("/v1/sync/", data=json.dumps(moved), content_type="application/json")

    writes = [sql for sql in statements if "INSERT" in sql]
    # One statement: the check that the record is new, the event and its jobs (a data-modifying CTE).
    assert len(writes) == 1 and writes[0].startswith("WITH known AS (") and "events AS (INSERT" in writes[0]
    assert not any(sql.startswith(("BEGIN", "SAVEPOINT")) for sql in statements)
    assert response.status_code == nowhere.status_code == 202
    assert response.json()["jobs"] == [
        {"target": "outreach", "state": "pending"},
        {"target": "salesforce", "state": "pending"},
    ]
    event = SyncEvent.objects.get(pk=response.json()["event_id"])
    assert (event.payload, event.response) == (EVENT["data"], {})
    assert SyncJob.objects.filter(last_event=event).count() == 2
    assert SyncJob.objects.get(record_id="c-2").target.name == "outreach"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_one_statement_is_prepared_once_a_connection_with_a_plan_that_probes_the_index():
    """Prepared, a single event's statement is planned once for every record; that plan must look the record up
    in the index. A list's is bound on the server but not prepared (planned at each run: see the next test)."""
    Connection.objects.create(name="outreach", kind="outreach")
    client = Client(HTTP_AUTHORIZATION=f"Token {api_token_create(username='platform')}")
    for n in range(3):
        body = {**EVENT, "record_id": f"c-{n}"}
        assert client.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202
    listed = [{**EVENT, "record_id": f"l-{n}"} for n in range(2)]
    assert client.post("/v1/sync/", data=json.dumps(listed), content_type="application/json").status_code == 202

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, cardinality(parameter_types), statement LIKE '%%unnest(%%::text[]) AS k(record_id)%%' "
            "FROM pg_prepared_statements WHERE statement LIKE 'WITH known%%' ORDER BY 3"
        )
        prepared = cursor.fetchall()
        # Three single events, one statement prepared; the list's, none.
        assert [listed for _, _, listed in prepared] == [False]
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        plans = []
        try:
            for name, parameters, _ in prepared:
                cursor.execute(f"EXPLAIN EXECUTE {name}({', '.join(['NULL'] * parameters)})")
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
        finally:
            cursor.execute("RESET plan_cache_mode")
    for plan in plans:
        assert "Index Only Scan using job_per_record_target" in plan
        assert "Seq Scan on sync_syncjob" not in plan
    assert SyncJob.objects.count() == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_list_is_planned_for_the_jobs_table_as_it_is_not_as_it_was_when_first_posted():
    """A plan cached while the jobs table was empty (a fresh install, a table emptied and vacuumed) looked each
    of a list's records up by scanning the whole table once the table had grown, until the next ANALYZE: lists
    at a third of their rate in the benchmark. The list's statement is planned at each run, so the plan of a
    list posted after the table grew probes the index (seen through auto_explain, sent to this client)."""
    Connection.objects.create(name="outreach", kind="outreach")
    client = Client(HTTP_AUTHORIZATION=f"Token {api_token_create(username='platform')}")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE sync_syncjob")  # the statistics of an empty table
    for n in range(8):  # past the five runs after which PostgreSQL may settle on a cached generic plan
        listed = [{**EVENT, "record_id": f"l{n}-{i}"} for i in range(2)]
        assert client.post("/v1/sync/", data=json.dumps(listed), content_type="application/json").status_code == 202
    target = Connection.objects.get(name="outreach").pk
    plans: list[str] = []
    with connection.cursor() as cursor:
        # The table grows to 30,000 jobs without a new ANALYZE.
        cursor.execute(
            f"INSERT INTO sync_syncjob ({transitions.ARRIVAL_COLUMNS}) "  # noqa: S608 - the model's own columns
            "SELECT 'system_a', 'contact', 'g-' || n, %s, 'synced', 0, 1, NULL, now(), now(), now(), '', '', '', 0 "
            "FROM generate_series(1, 30000) AS n",
            [target],
        )
        cursor.execute("LOAD 'auto_explain'")
        cursor.execute("SET auto_explain.log_min_duration = 0")
        cursor.execute("SET client_min_messages = log")
        driver = cursor.cursor.connection

    def keep(notice: Any) -> None:
        plans.append(notice.message_primary or "")

    driver.add_notice_handler(keep)
    try:
        listed = [{**EVENT, "record_id": f"m-{i}"} for i in range(2)]
        assert client.post("/v1/sync/", data=json.dumps(listed), content_type="application/json").status_code == 202
    finally:
        driver.remove_notice_handler(keep)
        with connection.cursor() as cursor:
            cursor.execute("RESET client_min_messages")
            cursor.execute("RESET auto_explain.log_min_duration")

    (plan,) = [plan for plan in plans if "AS k(record_id)" in plan and "INSERT INTO sync_syncjob" in plan]
    assert "Index Only Scan using job_per_record_target" in plan, plan
    assert "Seq Scan on sync_syncjob" not in plan, plan


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(DB_PREPARED_STATEMENTS=False)
def test_with_prepared_statements_off_nothing_is_prepared():
    """For a pooler in transaction mode, which cannot keep a session's prepared statements."""
    connection.close()  # a session of its own: an earlier test's may hold the statement prepared
    Connection.objects.create(name="outreach", kind="outreach")
    client = Client(HTTP_AUTHORIZATION=f"Token {api_token_create(username='platform')}")
    response = client.post("/v1/sync/", data=json.dumps(EVENT), content_type="application/json")

    assert response.status_code == 202 and response.json()["jobs"] == [{"target": "outreach", "state": "pending"}]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone() == (0,)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_change_to_a_known_record_is_written_in_a_transaction_that_can_judge_it():
    """The one-statement write takes only records never seen: for a known one it writes nothing, and the
    transactional path stores it (where late changes, deletes and conflicts are checked)."""
    Connection.objects.create(name="outreach", kind="outreach")
    client = Client(HTTP_AUTHORIZATION=f"Token {api_token_create(username='platform')}")
    assert client.post("/v1/sync/", data=json.dumps(EVENT), content_type="application/json").status_code == 202
    statements: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    update = {**EVENT, "operation": "update", "data": {"email": "b@example.com"}}
    with connection.execute_wrapper(record):
        response = client.post("/v1/sync/", data=json.dumps(update), content_type="application/json")

    assert response.status_code == 202 and response.json()["jobs"] == [{"target": "outreach", "state": "pending"}]
    assert any(sql.startswith("WITH known AS (") for sql in statements)  # tried, wrote nothing
    upserts = [sql for sql in statements if "INSERT INTO sync_syncjob" in sql and not sql.startswith("WITH")]
    assert len(upserts) == 1  # the transactional path's own job upsert, after the events were checked
    assert SyncEvent.objects.count() == 2 and SyncJob.objects.get().version == 2
