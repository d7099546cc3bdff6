"""What the pipeline is doing, in figures: pure reads for the staff dashboard and `GET /v1/sync/stats`.

Every function takes the moment to measure at (`now`) and answers plain values: dicts, lists, numbers,
strings and timezone-aware datetimes, ready for a serializer or a template. Each figure is a few
aggregate queries over all connections at once, never one query per connection or per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

from django.conf import settings
from django.db import connection as db
from django.db import transaction
from django.db.models import (
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.expressions import Window
from django.db.models.functions import Coalesce, RowNumber, TruncHour, TruncMinute
from django.utils import timezone
from django_redis import get_redis_connection

from crms.models import Connection
from rules.contracts import target_payload
from sync import transitions
from sync.delivery import allowance, config
from sync.delivery.throttle import (
    margin,
    quota_key,
    redis_keys,  # the throttle owns its Redis key names; read them, never copy them
)
from sync.models import (
    AttemptMinute,
    AttemptOutcome,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    ConflictState,
    JobCount,
    JobState,
    SyncAttempt,
    SyncConflict,
    SyncJob,
    ThrottleCall,
    ThrottleLimit,
)

MINUTES = 60
HOURS = 24
ISSUE_STATES = (JobState.FAILED, JobState.HELD)


def _redis() -> Any:
    return get_redis_connection("default")


# Swappable, like the throttle's own clock: tests point it at a Redis that is not there.
redis_connection: Callable[[], Any] = _redis


class JobCounts(TypedDict):
    total: int
    by_state: dict[str, int]  # every state, zeros included
    by_target: dict[str, dict[str, int]]  # connection name → state → count; every connection, every state
    finished_counted_at: datetime | None  # finished states as counted then (JobCount); None: counted now


class Bucket(TypedDict):
    start: datetime
    synced: int  # attempts that succeeded
    failed: int  # attempts that ended in an error (retried later or not)


class Throughput(TypedDict):
    per_minute: list[Bucket]  # the last 60 minutes, oldest first; the last bucket is the minute under way
    per_hour: list[Bucket]  # the last 24 hours, the same way


class Lag(TypedDict):
    connection: str
    enabled: bool  # a disabled connection's jobs are not dispatched: its lag only grows
    due: int
    lag_seconds: float  # how long the oldest due job has waited; 0.0 when none is due
    oldest_due_since: datetime | None


class Cap(TypedDict):
    calls: int
    per_seconds: float
    until: datetime | None


class ThrottleUse(TypedDict):
    connection: str
    key: str  # the quota owner's window
    shared_with: list[str]  # other connections counted in the same window
    limit: int  # our calls per window; 0: no limit of ours
    window_seconds: float
    used: int | None  # calls in the window now; None: unknown (see `note`)
    percent: float | None
    measured: Literal["database", "redis", "unknown"]
    note: str
    hold_until: datetime | None  # the target asked for no calls until then
    cap: Cap | None  # the target's own allowance, spread thin


class Breaker(TypedDict):
    connection: str
    state: str
    failures: int
    since: datetime | None  # when it entered this state (not closed: when it left closed); None: never changed
    opened_at: datetime | None
    last_error: str


class IssueJob(TypedDict):
    id: int
    record_id: str
    object_type: str
    source: str
    target: str
    state: str
    operation: str | None
    attempts: int
    error_code: str
    error_message: str
    permanent: bool | None
    since: datetime  # when the job took this state
    received_at: datetime | None  # when the change it carries was accepted
    payload: Any  # what would be sent: the rules' fields for this target, else the record as received
    conflict_id: int | None  # held jobs: the open conflict awaiting review


class IssueGroup(TypedDict):
    code: str
    count: int
    states: dict[str, int]
    targets: list[str]
    since: datetime  # the oldest job of the group took its state then
    latest: datetime
    jobs: list[IssueJob]  # the oldest first, at most `per_group`


class Allowance(TypedDict):
    key: str  # the quota owner
    connection: str  # the connection whose answer said it
    observed_at: datetime
    used: int  # every integration's calls, as the target counts them
    cap: int
    percent_left: float
    refills_in_seconds: float
    rate_per_hour: float | None  # over the last hour; None: too few samples
    runs_out_at: datetime | None  # at that rate, before it refills; None: it does not


class Stats(TypedDict):
    generated_at: datetime
    jobs: JobCounts
    throughput: Throughput
    lag: list[Lag]
    throttle: list[ThrottleUse]
    breakers: list[Breaker]
    allowance: list[Allowance]


def sync_stats(*, now: datetime | None = None) -> Stats:
    """Every figure at once, the connections read once."""
    now = now or timezone.now()
    connections = _connections()
    return {
        "generated_at": now,
        "jobs": job_counts(connections=connections, now=now),
        "throughput": throughput(now=now),
        "lag": lag(now=now, connections=connections),
        "throttle": throttle_use(now=now, connections=connections),
        "breakers": breakers(connections=connections),
        "allowance": allowances(now=now),
    }


def allowances(*, now: datetime) -> list[Allowance]:
    """Each quota owner's own allowance as its target last told it, fullest first, with the forecast."""
    return [
        {
            "key": found.key,
            "connection": found.connection,
            "observed_at": found.observed_at,
            "used": found.used,
            "cap": found.cap,
            "percent_left": found.percent_left,
            "refills_in_seconds": found.refills_in,
            "rate_per_hour": found.rate_per_hour,
            "runs_out_at": found.runs_out_at,
        }
        for found in allowance.forecasts(now=now)
    ]


def _connections() -> list[Connection]:
    return list(Connection.objects.order_by("name"))


# Finished jobs pile up (a million after a while); open ones stay few. The finished are counted once a minute
# (job_counts_refresh, the "sync-job-counts" schedule), the open ones on every read.
FINISHED = (JobState.SYNCED, JobState.SKIPPED, JobState.SUPERSEDED)
COUNTS_FRESH_FOR = timedelta(minutes=10)  # an older count (no cluster running) is not trusted: counted live
_JOBS, _COUNTS, _TARGETS = SyncJob._meta.db_table, JobCount._meta.db_table, Connection._meta.db_table
_FINISHED_SQL = ", ".join(f"'{state}'" for state in FINISHED)
# IN, not NOT IN: an index on the state serves a list of the open states, never a negation.
_OPEN_SQL = ", ".join(f"'{state}'" for state in JobState.values if state not in FINISHED)
# One statement, for a constant number of queries per page: the finished jobs from the stored counts (first:
# their column types the NULLs), the open ones counted now, and the finished ones counted now only if no count
# is fresh. That NOT EXISTS is uncorrelated, a one-time filter: with fresh counts the scan never runs.
_COUNTS_SQL = f"""
    WITH fresh AS (SELECT target_id, state, count, counted_at FROM {_COUNTS} WHERE counted_at >= %s)
    SELECT t.name, f.state, f.count, f.counted_at FROM fresh f JOIN {_TARGETS} t ON t.id = f.target_id
    UNION ALL
    SELECT t.name, j.state, count(*), NULL FROM {_JOBS} j JOIN {_TARGETS} t ON t.id = j.target_id
        WHERE j.state IN ({_OPEN_SQL}) GROUP BY t.name, j.state
    UNION ALL
    SELECT t.name, j.state, count(*), NULL FROM {_JOBS} j JOIN {_TARGETS} t ON t.id = j.target_id
        WHERE j.state IN ({_FINISHED_SQL}) AND NOT EXISTS (SELECT 1 FROM fresh) GROUP BY t.name, j.state
"""  # noqa: S608 - table names from the models, the time bound as a parameter


def job_counts(*, connections: Sequence[Connection] | None = None, now: datetime | None = None) -> JobCounts:
    """Every target's jobs per state: open ones counted now, finished ones as last counted (within
    COUNTS_FRESH_FOR; else counted now). One query."""
    now = now or timezone.now()
    connections = _connections() if connections is None else connections
    by_target = {c.name: dict.fromkeys(JobState.values, 0) for c in connections}
    by_state = dict.fromkeys(JobState.values, 0)
    counted_at: datetime | None = None
    with db.cursor() as cursor:
        cursor.execute(_COUNTS_SQL, [now - COUNTS_FRESH_FOR])
        rows = cursor.fetchall()
    for name, state, n, at in rows:
        by_target.setdefault(name, dict.fromkeys(JobState.values, 0))[state] = int(n)
        by_state[state] = by_state.get(state, 0) + int(n)
        if at is not None:
            stamp = at if isinstance(at, datetime) else datetime.fromisoformat(at)  # SQLite answers text
            stamp = stamp if timezone.is_aware(stamp) else timezone.make_aware(stamp, UTC)
            counted_at = stamp if counted_at is None else min(counted_at, stamp)
    return {
        "total": sum(by_state.values()),
        "by_state": by_state,
        "by_target": by_target,
        "finished_counted_at": counted_at,
    }


def job_counts_refresh(*, now: datetime | None = None) -> int:
    """Count every target's finished jobs and store the counts (the "sync-job-counts" schedule). Returns rows."""
    now = now or timezone.now()
    rows = SyncJob.objects.filter(state__in=FINISHED).values("target_id", "state").annotate(n=Count("id")).order_by()
    counts = [JobCount(target_id=r["target_id"], state=r["state"], count=r["n"], counted_at=now) for r in rows]
    with transaction.atomic():
        JobCount.objects.all().delete()  # a target or state with none left must not keep an old count
        JobCount.objects.bulk_create(counts)
    return len(counts)


def throughput(*, now: datetime) -> Throughput:
    """Attempts by the minute they finished, over the last 24 hours: the last 60 minutes as they are, and summed
    into hours. The minutes the cluster has counted (AttemptMinute) are read from their counts, the rest (the
    current minute; all of them when no cluster runs) from the attempts. One query, of three parts."""
    minute, hour = timedelta(minutes=1), timedelta(hours=1)
    minutes = _zeros(_floor(now, minute) - minute * (MINUTES - 1), minute, MINUTES)
    hours = _zeros(_floor(now, hour) - hour * (HOURS - 1), hour, HOURS)
    counted = AttemptMinute.objects.filter(minute__gte=min(hours), minute__lte=now)
    by_hour = (
        counted.annotate(at=TruncHour("minute", tzinfo=UTC), part=Value("hour"))
        .values("at", "part")
        .annotate(synced_n=Sum("synced"), failed_n=Sum("failed"))
        .order_by()
    )
    by_minute = (
        counted.filter(minute__gte=min(minutes))
        .annotate(at=F("minute"), part=Value("minute"), synced_n=F("synced"), failed_n=F("failed"))
        .values("at", "part", "synced_n", "failed_n")
        .order_by()
    )
    # Counted through its last minute: the attempts after it are counted here (an uncorrelated subquery, run once).
    last = Subquery(counted.order_by("-minute").values("minute")[:1])
    since = Coalesce(ExpressionWrapper(last + Value(minute), output_field=DateTimeField()), Value(min(hours)))
    live = (
        _sent(since=min(hours), until=now)
        .filter(finished_at__gte=since)
        .annotate(at=TruncMinute("finished_at", tzinfo=UTC), part=Value("live"))
        .values("at", "part")
        .annotate(
            synced_n=Count("id", filter=Q(outcome=AttemptOutcome.SUCCESS)),
            failed_n=Count("id", filter=Q(outcome=AttemptOutcome.ERROR)),
        )
        .order_by()
    )
    for row in by_hour.union(by_minute, live, all=True):
        at, synced, failed = row["at"].astimezone(UTC), row["synced_n"], row["failed_n"]
        if row["part"] != "hour":
            _add(minutes.get(at), synced, failed)
        if row["part"] != "minute":
            _add(hours.get(_floor(at, hour)), synced, failed)
    return {"per_minute": list(minutes.values()), "per_hour": list(hours.values())}


def _sent(*, since: datetime, until: datetime) -> QuerySet[SyncAttempt]:
    """Attempts that made a call and finished from `since` to `until`. Held and skipped attempts made none: they
    are not throughput."""
    return SyncAttempt.objects.filter(
        finished_at__gte=since, finished_at__lte=until, outcome__in=(AttemptOutcome.SUCCESS, AttemptOutcome.ERROR)
    )


def _add(bucket: Bucket | None, synced: int, failed: int) -> None:
    if bucket is not None:
        bucket["synced"] += synced
        bucket["failed"] += failed


def _attempt_minutes(*, since: datetime, until: datetime) -> list[tuple[datetime, int, int]]:
    """(minute, synced, failed) of the attempts sent from `since` to `until`, minutes with none left out."""
    rows = (
        _sent(since=since, until=until)
        .annotate(bucket=TruncMinute("finished_at", tzinfo=UTC))
        .values("bucket", "outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    found: dict[datetime, list[int]] = {}
    for row in rows:
        counts = found.setdefault(row["bucket"].astimezone(UTC), [0, 0])
        counts[0 if row["outcome"] == AttemptOutcome.SUCCESS else 1] += row["n"]
    return [(at, synced, failed) for at, (synced, failed) in sorted(found.items())]


# Attempts are written as their batch ends, and commit a moment later: a counted minute is counted again for
# this long, so an attempt that committed late is in the count a minute after. One committed later still (a
# batch's transaction held that long, or a worker's clock that far behind the cluster's) is not in the charts.
RECOUNT = timedelta(minutes=15)
_TICK = timedelta(microseconds=1)  # _attempt_minutes' `until` is inclusive: a minute ends a microsecond before the next


def attempt_minutes_refresh(*, now: datetime | None = None) -> int:
    """Count the attempts of every finished minute not counted yet, the last RECOUNT again, over the window the
    charts show (the "sync-attempt-minutes" schedule); minutes older than it are dropped. Returns the minutes
    written. Safe to run twice, or two at once: each minute's count is replaced, not added to."""
    now = now or timezone.now()
    minute = timedelta(minutes=1)
    end = _floor(now, minute)  # the current minute goes on: it is counted live
    first = _floor(now, timedelta(hours=1)) - timedelta(hours=HOURS - 1)
    # Minutes from `end` on were counted by a clock ahead of this one (a host's, or stepped back since): dropped
    # below, and counted again when they are over, or they would stop the count until then and stay partial.
    last = AttemptMinute.objects.filter(minute__gte=first, minute__lt=end).aggregate(last=Max("minute"))["last"]
    start = max(first, last + minute - RECOUNT) if last else first
    counts = {at: (synced, failed) for at, synced, failed in _attempt_minutes(since=start, until=end - _TICK)}
    rows = [
        AttemptMinute(minute=at, synced=counts.get(at, (0, 0))[0], failed=counts.get(at, (0, 0))[1])
        for at in (start + minute * n for n in range((end - start) // minute))
    ]
    with transaction.atomic():
        AttemptMinute.objects.filter(Q(minute__lt=first) | Q(minute__gte=end)).delete()
        AttemptMinute.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["minute"], update_fields=["synced", "failed"]
        )
    return len(rows)


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0, minute=0 if step >= timedelta(hours=1) else moment.minute)


def _zeros(first: datetime, step: timedelta, count: int) -> dict[datetime, Bucket]:
    """Buckets with none are zeros, not gaps."""
    return {first + step * i: {"start": first + step * i, "synced": 0, "failed": 0} for i in range(count)}


def lag(*, now: datetime, connections: Sequence[Connection] | None = None) -> list[Lag]:
    """Per connection, as `selectors.queue_lag` measures the whole queue: the oldest due job by `updated_at`."""
    connections = _connections() if connections is None else connections
    due = (
        SyncJob.objects.filter(state__in=transitions.DUE)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .values("target_id")
        .annotate(oldest=Min("updated_at"), n=Count("id"))
        .order_by()
    )
    found = {row["target_id"]: row for row in due}
    answer: list[Lag] = []
    for connection in connections:
        row = found.get(connection.pk)
        oldest = row["oldest"] if row else None
        answer.append(
            {
                "connection": connection.name,
                "enabled": connection.enabled,
                "due": row["n"] if row else 0,
                "lag_seconds": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
                "oldest_due_since": oldest,
            }
        )
    return answer


def throttle_use(
    *,
    now: datetime,
    connections: Sequence[Connection] | None = None,
    backend: Literal["database", "redis"] | None = None,
) -> list[ThrottleUse]:
    """Calls in each quota owner's window against the connection's `rate_limit_calls`, from where the throttle
    keeps them (`backend`: as `sync.delivery.throttle.throttle()` chooses). The window counted is the one the throttle
    enforces: `rate_limit_window` plus its small margin. Redis times its window by its own clock, not `now`."""
    connections = _connections() if connections is None else connections
    backend = backend or ("redis" if settings.REDIS_URL else "database")
    rows = [_throttle_row(c, connections) for c in connections]
    if backend == "redis":
        _read_redis(rows)
    else:
        _read_database(rows, now)
    return rows


def _throttle_row(connection: Connection, everyone: Sequence[Connection]) -> ThrottleUse:
    settings_now = config.effective(connection.pk)
    key = quota_key(connection)
    window = float(settings_now.rate_limit_window)
    return {
        "connection": connection.name,
        "key": key,
        "limit": settings_now.rate_limit_calls,
        "shared_with": [c.name for c in everyone if c.pk != connection.pk and quota_key(c) == key],
        "window_seconds": window + margin(window),
        "used": None,
        "percent": None,
        "measured": "unknown",
        "note": "",
        "hold_until": None,
        "cap": None,
    }


def _counted(row: ThrottleUse, used: int, measured: Literal["database", "redis"]) -> None:
    """Calls are only recorded while some limit applies: with neither ours nor the target's cap, nobody counts."""
    if row["limit"] <= 0 and row["cap"] is None:
        row["note"] = "no rate limit: calls are not counted"
        return
    row["used"], row["measured"] = used, measured
    if row["limit"] > 0:
        row["percent"] = round(100.0 * used / row["limit"], 1)


def _read_database(rows: list[ThrottleUse], now: datetime) -> None:
    """One query counts every key's window (each its own length), one reads the target's holds and caps."""
    keys = {row["key"] for row in rows}
    limits = {t.key: t for t in ThrottleLimit.objects.filter(key__in=keys)}
    counts: dict[str, Any] = {}
    if rows:
        # No upper bound: a call in flight is counted at the latest it can arrive, after `now`.
        windows = {
            f"n{i}": Count("id", filter=Q(key=row["key"], at__gt=now - timedelta(seconds=row["window_seconds"])))
            for i, row in enumerate(rows)
        }
        counts = ThrottleCall.objects.filter(key__in=keys).aggregate(**windows)
    for i, row in enumerate(rows):
        target = limits.get(row["key"])
        if target is not None and target.hold_until is not None and target.hold_until > now:
            row["hold_until"] = target.hold_until
        if target is not None and target.cap_calls and target.cap_until is not None and target.cap_until > now:
            row["cap"] = {
                "calls": target.cap_calls,
                "per_seconds": float(target.cap_seconds or row["window_seconds"]),
                "until": target.cap_until,
            }
        _counted(row, int(counts.get(f"n{i}") or 0), "database")


def _read_redis(rows: list[ThrottleUse]) -> None:
    """One round trip: ZCOUNT over the window by Redis's clock (the set keeps older calls until the next
    acquire trims it, so its size alone would overcount), the hold's PTTL and the cap's hash."""
    try:
        client = redis_connection()
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        with client.pipeline(transaction=False) as pipe:
            for row in rows:
                calls, hold, cap = redis_keys(row["key"])
                pipe.zcount(calls, f"({now_ms - int(row['window_seconds'] * 1000)}", "+inf")
                pipe.pttl(hold)
                pipe.hmget(cap, "n", "p")
                pipe.pttl(cap)
            answers = pipe.execute()
    except Exception as exc:  # a figure we cannot read is unknown, never a guess or a broken page
        for row in rows:
            row["note"] = f"Redis unreachable ({type(exc).__name__})"
        return
    redis_now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    for i, row in enumerate(rows):
        used, hold_ms, (calls, per_ms), cap_ms = answers[4 * i : 4 * i + 4]
        if int(hold_ms) > 0:
            row["hold_until"] = redis_now + timedelta(milliseconds=int(hold_ms))
        if calls is not None and per_ms is not None:
            until = redis_now + timedelta(milliseconds=int(cap_ms)) if int(cap_ms) > 0 else None
            row["cap"] = {"calls": int(calls), "per_seconds": int(per_ms) / 1000, "until": until}
        _counted(row, int(used), "redis")


def breakers(*, connections: Sequence[Connection] | None = None) -> list[Breaker]:
    """A connection without a breaker row has never failed: closed. `since` for a breaker not closed is when it
    left closed, as the breaker-open alert measures it (a failed probe re-opens it and moves `opened_at`)."""
    connections = _connections() if connections is None else connections
    history = BreakerTransition.objects.filter(connection=OuterRef("connection")).order_by("-at").values("at")
    left_closed = history.filter(from_state=BreakerState.CLOSED)
    annotated = CircuitBreaker.objects.annotate(changed=Subquery(history[:1]), left_closed=Subquery(left_closed[:1]))
    rows = {row.connection_id: row for row in annotated}
    answer: list[Breaker] = []
    for connection in connections:
        row = rows.get(connection.pk)
        if row is None:
            answer.append(
                {
                    "connection": connection.name,
                    "state": BreakerState.CLOSED,
                    "failures": 0,
                    "since": None,
                    "opened_at": None,
                    "last_error": "",
                }
            )
            continue
        since = row.changed if row.state == BreakerState.CLOSED else (row.left_closed or row.opened_at)
        answer.append(
            {
                "connection": connection.name,
                "state": row.state,
                "failures": row.failures,
                "since": since,
                "opened_at": row.opened_at,
                "last_error": row.last_error,
            }
        )
    return answer


def issue_groups(*, per_group: int = 50) -> list[IssueGroup]:
    """Failed and held jobs grouped by error code, the largest group first; in each, the jobs stuck longest
    first. Three queries: the groups, at most `per_group` jobs of each (a window function), their conflicts."""
    stuck = SyncJob.objects.filter(state__in=ISSUE_STATES)
    groups: dict[str, IssueGroup] = {}
    summary = stuck.values("last_error_code", "state", "target__name").annotate(
        n=Count("id"), since=Min("updated_at"), latest=Max("updated_at")
    )
    for row in summary.order_by():
        group = groups.setdefault(
            row["last_error_code"],
            {
                "code": row["last_error_code"],
                "count": 0,
                "states": {},
                "targets": [],
                "since": row["since"],
                "latest": row["latest"],
                "jobs": [],
            },
        )
        group["count"] += row["n"]
        group["states"][row["state"]] = group["states"].get(row["state"], 0) + row["n"]
        if row["target__name"] not in group["targets"]:
            group["targets"] = sorted([*group["targets"], row["target__name"]])
        group["since"], group["latest"] = min(group["since"], row["since"]), max(group["latest"], row["latest"])
    rank = Window(RowNumber(), partition_by=[F("last_error_code")], order_by=[F("updated_at").asc(), F("id").asc()])
    jobs = list(
        stuck.annotate(rank=rank)
        .filter(rank__lte=per_group)
        .select_related("target", "last_event")
        .order_by("last_error_code", "updated_at", "id")
    )
    conflicts = _open_conflicts([job for job in jobs if job.state == JobState.HELD])
    for job in jobs:
        if job.last_error_code in groups:  # a job that changed state between the two queries is left out
            groups[job.last_error_code]["jobs"].append(_issue_job(job, conflicts.get((job.record_id, job.target_id))))
    return sorted(groups.values(), key=lambda g: (-g["count"], g["code"]))


def _open_conflicts(held: Sequence[SyncJob]) -> dict[tuple[str, int], int]:
    """A held job waits on the open conflict of its record with the CRM: the job's target, or its source when
    the job carries the CRM's change to System A."""
    if not held:
        return {}
    rows = SyncConflict.objects.filter(state=ConflictState.OPEN, record_id__in={job.record_id for job in held})
    by_name = {(c.record_id, c.connection.name): c.pk for c in rows.select_related("connection")}
    found: dict[tuple[str, int], int] = {}
    for job in held:
        conflict = by_name.get((job.record_id, job.target.name)) or by_name.get((job.record_id, job.source))
        if conflict is not None:
            found[(job.record_id, job.target_id)] = conflict
    return found


def _issue_job(job: SyncJob, conflict_id: int | None) -> IssueJob:
    event = job.last_event
    return {
        "id": job.pk,
        "record_id": job.record_id,
        "object_type": job.object_type,
        "source": job.source,
        "target": job.target.name,
        "state": job.state,
        "operation": event.operation if event else None,
        "attempts": job.attempts,
        "error_code": job.last_error_code,
        "error_message": job.last_error_message,
        "permanent": job.last_error_permanent,
        "since": job.updated_at,
        "received_at": event.received_at if event else None,
        "payload": payload_for(job),
        "conflict_id": conflict_id,
    }


def payload_for(job: SyncJob) -> Any:
    """The fields the engine would send this target (as `delivery.engine` prepares them), or None: no event left."""
    event = job.last_event
    if event is None:
        return None
    spec = target_payload(event.routing, job.target.name)
    return spec.get("fields") if spec else event.payload
