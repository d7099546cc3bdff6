"""What bench/scale.py measures inside Django, against the bench database: run as a script with the bench's
environment (`python bench/scale_probe.py <probe> [args]`), it prints one JSON object.

Probes:
  pages      every GET /v1/sync/jobs filter and the dashboard's pages through Django's test client (the whole
             stack but the socket), N times each: p50/p99 ms, and EXPLAIN ANALYZE of each jobs page's query
  status     GET /v1/sync/status/<record_id> for random records: p50/p99 ms
  dispatch   claim every pending job of a connection with the engine's own batches_claim, one batch a tick, each
             started as a worker would (untimed): jobs/s and each claim's ms; the database's time for one claim
             with no batch and with 8 batches claimed ahead of it (eight workers, each with one waiting)
  retention  a steady load replayed day by day on a moved clock (Django's timezone.now), each day's jobs
             synced with an attempt, then the day's prune: rows and table sizes per day
"""

from __future__ import annotations

import importlib
import json
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recordsync.settings")

# The web process as gunicorn loads it (recordsync.wsgi: Django set up, the URL conf loaded, the heap frozen),
# so the pages are timed in the process state they are served from.
importlib.import_module("recordsync.wsgi")

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from crms.models import Connection  # noqa: E402
from sync import transitions  # noqa: E402
from sync.delivery import engine, leases  # noqa: E402
from sync.models import JobClaim, JobState, SyncJob  # noqa: E402

JOB_FILTERS = [
    "",
    "state=pending",
    "state=synced",
    "state=failed",
    "state=pending&order=oldest",
    "target=salesforce",
    "source=system_a",
    "object_type=Contact",
    "error_code=REQUIRED_FIELD_MISSING",
    "record_id=hist-500000",
    "updated_after=2026-01-01T00:00:00Z&state=synced",
]
DASHBOARD = ["/dashboard/", "/dashboard/issues/"]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def timed(client: Client, url: str, times: int, token: str | None = None) -> dict[str, Any]:
    samples: list[float] = []
    status = 0
    headers = {"Authorization": f"Token {token}"} if token else {}
    for _ in range(times):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        status = response.status_code
    if status != 200:  # a refusal is fast and measures nothing
        raise RuntimeError(f"GET {url} answered {status}")
    return {"url": url, "status": status, **percentiles(samples)}


def explain(client: Client, url: str, token: str) -> str:
    """EXPLAIN ANALYZE of the page's own query (the one reading sync_syncjob with a LIMIT)."""
    with CaptureQueriesContext(connection) as captured:
        client.get(url, HTTP_AUTHORIZATION=f"Token {token}")
    page = [q["sql"] for q in captured.captured_queries if "sync_syncjob" in q["sql"] and "LIMIT" in q["sql"]]
    if not page:
        return ""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {page[0]}")
        return "\n".join(row[0] for row in cursor.fetchall())


def sql_ms(run: Any, undo: Any = None, parts: list[tuple[str, float]] | None = None) -> tuple[float, int]:
    """The database's own time for what `run` asks: EXPLAIN ANALYZE of each of its reads and writes, replayed
    in order in one transaction rolled back, after `undo` has put back what `run` changed (replayed on the
    changed rows, the claim would find its jobs claimed already and cost nothing). The sum of their execution
    times, and how many statements; `parts` receives each statement's kind and time."""
    from django.db import transaction

    claims = JobClaim._meta.db_table
    with CaptureQueriesContext(connection) as captured:
        run()
    total, count = 0.0, 0
    with transaction.atomic(), connection.cursor() as cursor:
        if undo is not None:
            undo()
        for query in captured.captured_queries:
            sql = query["sql"]
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH", "INSERT", "DELETE")):
                continue
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
            took = float(cursor.fetchone()[0][0]["Execution Time"])
            total += took
            count += 1
            if parts is not None:  # the claim is a WITH … INSERT INTO the claims
                kind = "CLAIM" if f"INSERT INTO {claims}" in sql.replace('"', "") else sql.split(None, 1)[0].upper()
                parts.append((kind, round(took, 3)))
        transaction.set_rollback(True)
    return round(total, 3), count


def pages(times: int, token: str) -> dict[str, Any]:
    from sync.ops import stats

    # As the cluster's every-minute schedules have (sync-job-counts, sync-attempt-minutes); what they cost is
    # reported, off the page.
    started = time.perf_counter()
    stats.attempt_minutes_refresh()
    attempt_minutes_ms = round((time.perf_counter() - started) * 1000, 1)
    started = time.perf_counter()
    stats.job_counts_refresh()
    client = Client(HTTP_HOST="127.0.0.1")  # ALLOWED_HOSTS is the bench's
    staff, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    found: dict[str, Any] = {"jobs": [], "dashboard": [], "plans": {}}
    found["job_counts_refresh_ms"] = round((time.perf_counter() - started) * 1000, 1)
    found["attempt_minutes_refresh_ms"] = attempt_minutes_ms
    for query in JOB_FILTERS:
        url = f"/v1/sync/jobs?{query}" if query else "/v1/sync/jobs"
        client.get(url, HTTP_AUTHORIZATION=f"Token {token}")  # warm
        found["jobs"].append(timed(client, url, times, token))
        found["plans"][url] = explain(client, url, token)
    client.force_login(staff)
    for url in DASHBOARD:
        client.get(url)
        found["dashboard"].append(timed(client, url, max(5, times // 3)))
    return found


def status(times: int, token: str, prefix: str, count: int) -> dict[str, Any]:
    client = Client(HTTP_HOST="127.0.0.1")  # ALLOWED_HOSTS is the bench's
    samples: list[float] = []
    codes: set[int] = set()
    for _ in range(times):
        record = f"{prefix}{random.randrange(count)}"
        started = time.perf_counter()
        response = client.get(f"/v1/sync/status/{record}?object_type=Contact", HTTP_AUTHORIZATION=f"Token {token}")
        samples.append((time.perf_counter() - started) * 1000)
        codes.add(response.status_code)
    if codes - {200}:
        raise RuntimeError(f"status answered {sorted(codes)}")
    record = f"{prefix}{count // 2}"
    db_ms, statements = sql_ms(
        lambda: client.get(f"/v1/sync/status/{record}?object_type=Contact", HTTP_AUTHORIZATION=f"Token {token}")
    )
    return {"codes": sorted(codes), "sql_ms": db_ms, "statements": statements, **percentiles(samples)}


def dispatch(connection_name: str, passes: int = 3) -> dict[str, Any]:
    """Every pending job of the connection claimed, batch after batch, by the engine's own claim, one batch a
    tick, each started at once as a worker would (untimed), so no claim walks past batches left unstarted;
    handed back and claimed again, `passes` times (the rate is their median). Then the database's time for one
    claim, with none and with 8 batches (1,600 jobs) claimed ahead of it: a drain with eight workers keeps one
    batch waiting for each."""
    target = Connection.objects.get(name=connection_name)
    jobs = SyncJob.objects.filter(target=target)

    def one_batch(*, now: Any) -> int:  # the claim, not the back-pressure: one batch a tick
        return 1

    def reset() -> None:
        JobClaim.objects.filter(target=target).delete()
        jobs.filter(state=JobState.IN_FLIGHT).update(state=JobState.PENDING, lease_owner="", lease_expires_at=None)

    def start(ids: list[int]) -> None:
        # No owner: the back-pressure counts batches in flight by their owner, and this measures the claim alone.
        now = timezone.now()
        transitions.start(ids, owner="", lease_until=now + timedelta(minutes=5), now=now)

    vacuumed = [float("-inf")]

    def dispatcher_vacuum() -> None:  # as the dispatcher's pass does, between its ticks (untimed)
        if time.monotonic() - vacuumed[0] >= leases.CLAIMS_VACUUM_SECONDS:
            leases.claims_vacuum()
            vacuumed[0] = time.monotonic()

    leases.outstanding_limit = one_batch
    claims: list[float] = []
    rates: list[float] = []
    claimed = 0
    for _ in range(passes):
        reset()
        claimed, spent = 0, 0.0
        while True:
            dispatcher_vacuum()
            begun = time.perf_counter()
            batches = engine.batches_claim(connection=target, now=timezone.now(), force=True)
            took = time.perf_counter() - begun
            claims.append(took * 1000 / max(1, len(batches)))
            spent += took
            if not batches:
                break
            claimed += sum(len(ids) for ids in batches)
            for ids in batches:
                start(ids)
        rates.append(claimed / spent)
    seconds = claimed / statistics.median(rates)
    reset()

    def claim_one() -> None:  # one batch: what a dispatcher's tick asks of the database for it
        engine.batches_claim(connection=target, now=timezone.now(), force=True)

    def unclaim(ahead: set[int]) -> Any:
        return lambda: JobClaim.objects.filter(target=target).exclude(job_id__in=ahead).delete()

    def limit(batches: int) -> Any:
        return lambda *, now: batches

    found: dict[str, Any] = {}
    for label, waiting in (("", 0), ("_8_ahead", 8)):
        ahead: set[int] = set()
        if waiting:  # claimed, not started: the batches a drain's workers have waiting
            leases.outstanding_limit = limit(waiting)
            for ids in engine.batches_claim(connection=target, now=timezone.now(), force=True):
                ahead.update(ids)
        if len(ahead) != waiting * 200:
            raise RuntimeError(f"{len(ahead)} jobs claimed ahead, not {waiting * 200}")
        leases.outstanding_limit = limit(waiting + 1)  # room for the one batch measured
        dispatcher_vacuum()
        parts: list[tuple[str, float]] = []
        db_ms, statements = sql_ms(claim_one, unclaim(ahead), parts)
        if not any(kind == "CLAIM" for kind, _ in parts):
            raise RuntimeError(f"no claim among the statements measured{label}: {parts}")
        found[f"claim_sql_ms{label}"] = db_ms
        found[f"claim_statements{label}"] = statements
        # The claim's own statement (finding, locking and writing the batch) apart from the reads before it.
        found[f"claim_write_ms{label}"] = round(sum(ms for kind, ms in parts if kind == "CLAIM"), 3)
        reset()
    return {
        "jobs": claimed,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(statistics.median(rates), 1),
        "passes": [round(rate, 1) for rate in rates],
        **found,
        **percentiles(claims),
    }


def retention(days: int, pool: int, keep_days: int) -> dict[str, Any]:
    """`pool` records, each changed once a day for `days` days; retention prunes each day as its schedule
    would. A steady state shows as rows and sizes that stop growing once `keep_days` have passed."""

    from django.utils import timezone as tz

    from sync.contracts import EventInput
    from sync.ingest.services import event_ingest
    from sync.ops.retention import prune_run

    Connection.objects.get_or_create(name="target", defaults={"kind": "database", "config": {}})
    start = tz.now() - timedelta(days=days + 1)
    real_now = tz.now
    found: list[dict[str, Any]] = []
    try:
        for day in range(days):
            moment = start + timedelta(days=day)
            tz.now = _frozen(moment)  # the service reads the moved clock
            for first in range(0, pool, 500):
                items = [
                    EventInput(
                        operation="update",
                        object_type="Contact",
                        record_id=f"keep-{n}",
                        source="system_a",
                        data={"LastName": f"L{n}", "Day": day},
                        targets=["target"],
                        occurred_at=moment,
                        event_id=None,
                        raw={"n": n, "day": day},
                    )
                    for n in range(first, min(pool, first + 500))
                ]
                event_ingest(items=items, idempotency_key=None, is_batch=True, request_id="retention")
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO sync_syncattempt (job_id, version, started_at, finished_at, outcome, http_status, "
                    "error_code, error_message, permanent, duration_ms) SELECT id, version, %s, %s, 'success', 200, "
                    "'', '', NULL, 10 FROM sync_syncjob WHERE state = 'pending'",
                    [moment, moment],
                )
                cursor.execute(
                    "UPDATE sync_syncjob SET state = 'synced', synced_at = %s WHERE state = 'pending'", [moment]
                )
            pruned = prune_run(now=moment, older_than_days=keep_days, dry_run=False)
            with connection.cursor() as cursor:
                cursor.execute("VACUUM sync_syncevent, sync_syncattempt")  # as autovacuum would, so space is reused
                cursor.execute(
                    "SELECT (SELECT count(*) FROM sync_syncevent), (SELECT count(*) FROM sync_syncattempt), "
                    "(SELECT count(*) FROM sync_syncjob), pg_total_relation_size('sync_syncevent'), "
                    "pg_total_relation_size('sync_syncattempt')"
                )
                events, attempts, jobs, event_bytes, attempt_bytes = cursor.fetchone()
            found.append(
                {
                    "day": day + 1,
                    "events": events,
                    "attempts": attempts,
                    "jobs": jobs,
                    "event_mb": round(event_bytes / 2**20, 1),
                    "attempt_mb": round(attempt_bytes / 2**20, 1),
                    "pruned_events": pruned.counts.get("sync.SyncEvent", 0),
                }
            )
    finally:
        tz.now = real_now
    return {"pool": pool, "keep_days": keep_days, "days": found}


def _frozen(moment: Any) -> Any:
    def now() -> Any:
        return moment

    return now


def main(argv: list[str]) -> int:
    probe = argv[0]
    if probe == "pages":
        result = pages(int(argv[1]), argv[2])
    elif probe == "status":
        result = status(int(argv[1]), argv[2], argv[3], int(argv[4]))
    elif probe == "dispatch":
        result = dispatch(argv[1])
    elif probe == "retention":
        result = retention(int(argv[1]), int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown probe {probe!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
