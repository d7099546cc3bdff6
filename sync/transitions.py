"""The job state machine: every change of a SyncJob's state is one of the functions (or the SQL) here.

A job is the outbox row of one (record, target): the latest state that target still has to receive.
Callers decide *which* jobs move (a queryset, filtered on the state they expect, so that a second caller
finds nothing to move); this module says *what* a move writes. docs/architecture.md draws it:

    event arrives ─► pending ───────start──────► in_flight ──finish──► synced | skipped
                       ▲  ▲   (claimed first:      │                  retrying | failed
                       │  │    a JobClaim row)     │
                       │  └──to_pending────────────┘  (lease expired, holder dead, released,
                       │                               superseded by a newer event)
    retrying/failed ───┴── retry (an operator)          any waiting ──hold──► held ──unhold──► pending
                                                       a side holding the decision ──settle──► skipped

A dispatcher's claim does not change the job: it inserts a JobClaim, which keeps other dispatchers off
the job until a worker starts it (start deletes the claim and moves the job in flight) or the claim
expires. A job that leaves the due states meanwhile (held, settled) is not started.

A job in flight or held keeps its state when an event arrives; its version goes up, so the worker's
conditional finish (finish_*, run under the version it claimed) sends it back to pending instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import DateTimeField, F, QuerySet, Value
from django.db.models.functions import Greatest

from sync.models import JobClaim, JobState, SyncJob

Jobs = QuerySet[SyncJob]

DUE = (JobState.PENDING, JobState.RETRYING)  # a dispatcher may claim these once next_attempt_at has passed
WAITING = (JobState.PENDING, JobState.RETRYING, JobState.HELD, JobState.FAILED)  # nothing is sending these
RETRYABLE = (JobState.FAILED, JobState.RETRYING)  # an operator may send these again now

# The lease fields a job gives up when it leaves a lease: "back to pending, clear the lease", spelled once.
_NO_LEASE: dict[str, Any] = {"lease_expires_at": None, "lease_owner": ""}
_NO_ERROR: dict[str, Any] = {"last_error_code": "", "last_error_message": "", "last_error_permanent": None}
_KEEP = object()  # to_pending leaves fence_until as it is


# --- an event arrives (the ingest's upsert, one statement per batch of events) -----------------

_TABLE = SyncJob._meta.db_table
ARRIVAL_COLUMNS = (
    "source, object_type, record_id, target_id, state, attempts, version, last_event_id, last_occurred_at, "
    "created_at, updated_at, last_error_code, last_error_message, lease_owner, lane"
)
# A job in flight or held for review keeps its state (and its attempts and error) with a higher
# version: the worker's conditional finish then sends it back to pending. Any other job reopens,
# unless the event is older than the state the job already holds: an older change arriving late
# changes nothing (the caller reports it superseded, from the returned last_event_id).
_STAYS = f"{_TABLE}.state IN ('in_flight', 'held')"
_NEWER = f"excluded.last_occurred_at >= {_TABLE}.last_occurred_at"
_STAY = f"({_STAYS} OR NOT ({_NEWER}))"
# The lane: a job still waiting to send (or on its way) keeps the more urgent of its lane and the newer
# change's, so a backfill replaying a record never pushes its live change behind the backlog; a job that
# already sent its state takes the newer change's lane.
_OPEN = f"{_TABLE}.state IN ('pending', 'retrying', 'in_flight', 'held')"
_URGENT = f"CASE WHEN excluded.lane < {_TABLE}.lane THEN excluded.lane ELSE {_TABLE}.lane END"
_LANE = f"CASE WHEN NOT ({_NEWER}) THEN {_TABLE}.lane WHEN {_OPEN} THEN {_URGENT} ELSE excluded.lane END"
ARRIVAL_ON_CONFLICT = f"""
    ON CONFLICT (record_id, object_type, source, target_id) DO UPDATE SET
        version = CASE WHEN {_NEWER} THEN {_TABLE}.version + excluded.version ELSE {_TABLE}.version END,
        state = CASE WHEN {_STAY} THEN {_TABLE}.state ELSE 'pending' END,
        attempts = CASE WHEN {_STAY} THEN {_TABLE}.attempts ELSE 0 END,
        next_attempt_at = CASE WHEN {_STAY} THEN {_TABLE}.next_attempt_at ELSE NULL END,
        last_error_code = CASE WHEN {_STAY} THEN {_TABLE}.last_error_code ELSE '' END,
        last_error_message = CASE WHEN {_STAY} THEN {_TABLE}.last_error_message ELSE '' END,
        lease_owner = CASE WHEN {_STAY} THEN {_TABLE}.lease_owner ELSE '' END,
        last_event_id = CASE WHEN {_NEWER} THEN excluded.last_event_id ELSE {_TABLE}.last_event_id END,
        last_occurred_at = CASE WHEN {_NEWER} THEN excluded.last_occurred_at ELSE {_TABLE}.last_occurred_at END,
        updated_at = CASE WHEN {_NEWER} THEN excluded.updated_at ELSE {_TABLE}.updated_at END,
        lane = {_LANE}
    RETURNING record_id, object_type, source, target_id, state, version, last_occurred_at
"""


def arrival_unnest_sql(where: str = "") -> str:
    """PostgreSQL: new jobs are pending; known ones reopen or keep their state (ARRIVAL_ON_CONFLICT).
    Parameters: created_at, updated_at, lane, then the arrays source, object_type, record_id, target_id, bumps,
    last_event_id, last_occurred_at."""
    return f"""
        INSERT INTO {_TABLE} ({ARRIVAL_COLUMNS})
        SELECT s, o, r, t, 'pending', 0, v, e, oc, %s, %s, '', '', '', %s::smallint
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::uuid[], %s::timestamptz[])
             AS u(s, o, r, t, v, e, oc)
        {where}
        {ARRIVAL_ON_CONFLICT}
    """  # noqa: S608 - names from the model, values bound as parameters


def arrival_one_event_sql(events: str, where: str = "") -> str:
    """PostgreSQL: arrival_unnest_sql for the jobs of one event, each bumped once. `events` names a relation
    with the event's source, object_type, record_id, id and occurred_at (the single-event statement's inserted
    row). Parameters: created_at, updated_at, lane, then an array of target ids. One array where the unnest form
    binds seven: psycopg scans each array it binds to pick its element type."""
    return f"""
        INSERT INTO {_TABLE} ({ARRIVAL_COLUMNS})
        SELECT ev.source, ev.object_type, ev.record_id, t, 'pending', 0, 1, ev.id, ev.occurred_at,
               %s, %s, '', '', '', %s::smallint
        FROM {events} AS ev CROSS JOIN unnest(%s::bigint[]) AS u(t)
        {where}
        {ARRIVAL_ON_CONFLICT}
    """  # noqa: S608 - names from the model, values bound as parameters


def arrival_values_sql(count: int) -> str:
    """SQLite: the same as arrival_unnest_sql with multi-row VALUES (ten parameters a row, the lane last)."""
    values = ", ".join(["(%s, %s, %s, %s, 'pending', 0, %s, %s, %s, %s, %s, '', '', '', %s)"] * count)
    return f"INSERT INTO {_TABLE} ({ARRIVAL_COLUMNS}) VALUES {values} {ARRIVAL_ON_CONFLICT}"  # noqa: S608


# --- delivery -----------------------------------------------------------------------------------


_CLAIMS = JobClaim._meta.db_table


def unclaimed(jobs: Jobs, *, now: datetime) -> Jobs:
    """`jobs` without those a live claim holds.

    NOT IN, not NOT EXISTS: PostgreSQL reads the few live claims once into a hash, where a probe per job cost
    the walk 1.1 ms more at 1,600 claimed jobs ahead of it (eight workers, each with a batch waiting)."""
    return jobs.exclude(id__in=JobClaim.objects.filter(expires_at__gte=now).values("job_id"))


def claim(jobs: Jobs, *, size: int, owner: str, lease_until: datetime, now: datetime) -> list[int]:
    """The first `size` of `jobs` (due, unclaimed jobs, in the caller's order) become one batch claimed by
    `owner` until `lease_until`; returns their ids, ascending. The jobs themselves do not change.

    One statement, which finds the batch by the caller's index and inserts a claim for each job. The claim's
    key is the job's id, and an existing claim is taken over only once it has expired, so no job is claimed
    twice whatever the caller's filter saw. On PostgreSQL the jobs are locked as they are picked and rows
    another dispatcher holds are skipped (SKIP LOCKED), so two dispatchers pick different batches. The batch
    is a MATERIALIZED CTE, chosen once: a subquery the planner ran again could skip other rows the second
    time. NO KEY UPDATE: a SyncAttempt insert's foreign-key check on a job neither waits for a claim nor makes
    the claim skip that job.
    """
    db = connections[jobs.db]
    with transaction.atomic(using=jobs.db):  # select_for_update compiles only inside one
        batch = jobs.values("id", "target_id", "lane")[:size].select_for_update(skip_locked=True, no_key=True)
        picked, params = batch.query.get_compiler(using=jobs.db).as_sql()
        adapt = db.ops.adapt_datetimefield_value
        values = (owner, adapt(now), adapt(lease_until))
        # WHERE true: SQLite would read ON CONFLICT as the ON of a join without it.
        insert = f"""
            INSERT INTO {_CLAIMS} (job_id, target_id, lane, owner, claimed_at, expires_at)
            SELECT id, target_id, lane, %s, %s, %s FROM picked WHERE true
            ON CONFLICT (job_id) DO UPDATE
                SET owner = excluded.owner, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at,
                    target_id = excluded.target_id, lane = excluded.lane
                WHERE {_CLAIMS}.expires_at < excluded.claimed_at
            RETURNING job_id
        """  # noqa: S608 - names from the model, values bound as parameters
        with db.cursor() as cursor:
            cursor.execute(f"WITH picked AS MATERIALIZED ({picked}) {insert}", (*params, *values))
            return sorted(row[0] for row in cursor.fetchall())


def start(job_ids: Sequence[int], *, owner: str, lease_until: datetime, now: datetime, using: str = "default") -> int:
    """The worker that runs a batch takes it: the jobs' claims are deleted, and those still due go in flight
    under the worker's own lease. Returns how many it took.

    Deleting the claims is what takes the batch: a second worker given the same task (a broker's repeat) finds
    no claim left and takes nothing. A job held or settled since its claim is not due and stays as it is."""
    if not job_ids:
        return 0
    db = connections[using]
    marks = ", ".join(["%s"] * len(job_ids))
    with transaction.atomic(using=using):
        with db.cursor() as cursor:
            cursor.execute(f"DELETE FROM {_CLAIMS} WHERE job_id IN ({marks}) RETURNING job_id", list(job_ids))  # noqa: S608
            claimed = [row[0] for row in cursor.fetchall()]
        if not claimed:
            return 0
        due = SyncJob.objects.using(using).filter(id__in=claimed, state__in=DUE)
        return due.update(state=JobState.IN_FLIGHT, lease_owner=owner, lease_expires_at=lease_until, updated_at=now)


def take(jobs: Jobs, *, owner: str, lease_until: datetime, now: datetime) -> int:
    """Due jobs no dispatcher has claimed go in flight under `owner` at once, without a claim: a backfill's
    Bulk job sends them itself."""
    due = unclaimed(jobs.filter(state__in=DUE), now=now)
    return due.update(state=JobState.IN_FLIGHT, lease_owner=owner, lease_expires_at=lease_until, updated_at=now)


def unclaim(claims: QuerySet[JobClaim]) -> int:
    """Claims given up (expired, their holder dead, their task lost or never queued): the jobs, still due, are
    free for the next claim. Returns how many jobs were freed."""
    count, _ = claims.delete()
    return count


def to_pending(jobs: Jobs, *, now: datetime, fence_until: datetime | object | None = _KEEP) -> int:
    """Back to pending, the lease cleared: an expired or released lease, a dead holder, a lost task, a
    newer event that arrived while the job was in flight. `fence_until`: not sent again before then (a
    call cut off mid-way may still land)."""
    fence = {} if fence_until is _KEEP else {"fence_until": fence_until}
    return jobs.update(state=JobState.PENDING, updated_at=now, **_NO_LEASE, **fence)


def finish_synced(jobs: Jobs, *, now: datetime, finished: datetime) -> int:
    return jobs.update(
        state=JobState.SYNCED,
        synced_at=now,
        updated_at=finished,
        attempts=0,
        next_attempt_at=None,
        **_NO_LEASE,
        **_NO_ERROR,
    )


def finish_skipped(jobs: Jobs, *, finished: datetime) -> int:
    return jobs.update(
        state=JobState.SKIPPED, updated_at=finished, attempts=0, next_attempt_at=None, **_NO_LEASE, **_NO_ERROR
    )


def finish_unsent(
    jobs: Jobs,
    *,
    state: str,
    attempts: int,
    next_attempt_at: datetime | None,
    error: tuple[str, str, bool | None],
    finished: datetime,
) -> int:
    """Retrying (with its next attempt) or failed, with the error (code, message, permanent) that says why."""
    if state not in (JobState.RETRYING, JobState.FAILED):
        raise ValueError(f"a job that was not sent retries or fails, not {state!r}")
    code, message, permanent = error
    return jobs.update(
        state=state,
        attempts=attempts,
        next_attempt_at=next_attempt_at,
        updated_at=finished,
        last_error_code=code,
        last_error_message=message,
        last_error_permanent=permanent,
        **_NO_LEASE,
    )


def retry(jobs: Jobs, *, now: datetime) -> int:
    """An operator sends failed or retrying jobs again now, with their attempts counted afresh."""
    return jobs.filter(state__in=RETRYABLE).update(
        state=JobState.PENDING, attempts=0, next_attempt_at=None, updated_at=now
    )


# --- conflicts ----------------------------------------------------------------------------------


def hold(jobs: Jobs, *, code: str, message: str, now: datetime) -> int:
    """A job waits for a person (a conflict under review); one already on its way finishes first."""
    return jobs.filter(state__in=(JobState.PENDING, JobState.RETRYING, JobState.FAILED)).update(
        state=JobState.HELD,
        next_attempt_at=None,
        last_error_code=code,
        last_error_message=message,
        last_error_permanent=None,
        updated_at=now,
        **_NO_LEASE,
    )


def unhold(jobs: Jobs, *, now: datetime) -> int:
    """A held job goes on: pending, to send the state it holds (or the one an event brought meanwhile)."""
    return jobs.filter(state=JobState.HELD).update(
        state=JobState.PENDING, last_error_code="", last_error_message="", updated_at=now
    )


def settle(jobs: Jobs, *, code: str, message: str, decided_at: datetime, now: datetime) -> int:
    """The side already holds the decision: its waiting job is skipped, and holds the decision's time, so
    the losing version replayed later (older than that) is superseded rather than sent."""
    decided = Greatest(F("last_occurred_at"), Value(decided_at, output_field=DateTimeField()))
    return jobs.filter(state__in=WAITING).update(
        state=JobState.SKIPPED,
        next_attempt_at=None,
        attempts=0,
        last_error_code=code,
        last_error_message=message,
        last_error_permanent=None,
        updated_at=now,
        last_occurred_at=decided,
        **_NO_LEASE,
    )
