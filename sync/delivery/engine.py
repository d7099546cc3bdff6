"""The sync engine: pending jobs become batches, batches become connector calls, and every
result becomes a job state and an attempt row.

Job rows are the truth and every step is a conditional update, so a task run twice, a worker
killed mid-batch or two dispatchers at once never send a change twice or lose one: a lost
batch's lease expires and its jobs go back to pending; a repeat is an upsert of the same state.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from crms import http
from crms.base import Connector, ConnectorError, NotSent, OutboundRecord, PushResult
from crms.build import connector_for
from crms.models import Connection
from crms.registry import UnknownKind, connector_class
from recordsync.logging import request_id_var
from rules.contracts import target_payload
from sync import transitions
from sync.contracts import SYSTEM_A
from sync.delivery import config, holds, leases
from sync.delivery.breaker import Gate, breaker_allow, breaker_failure, breaker_release_probe, breaker_success
from sync.delivery.outcomes import (
    Outcome,
    outcomes_save,
)
from sync.delivery.throttle import gate_for, lane_share, throttle
from sync.models import AttemptOutcome, JobClaim, JobState, Lane, RecordLink, SyncEvent, SyncJob

logger = logging.getLogger("recordsync.engine")


def not_their_fault(error: ConnectorError) -> bool:
    """No call was made, or it was ours to hold back (crms.base.NotSent): the job waits without spending an
    attempt, and the breaker does not count it."""
    return isinstance(error, NotSent)


# --- dispatch: pending jobs -> claimed batches --------------------------------------------------


def targets_due() -> list[int]:
    """The enabled connections with a due job, which the dispatcher's pass visits.

    One probe of job_due_lane_idx per connection (EXISTS), so a pass costs the same whatever the backlog: a
    DISTINCT over the due jobs read every one of them, four times a second (20,000 pending with a million
    finished jobs: 5.4 ms a pass, 2.1 ms on empty tables; pg_stat_statements, three drains)."""
    due = SyncJob.objects.filter(target=OuterRef("pk"), state__in=transitions.DUE)
    return list(Connection.objects.filter(enabled=True).filter(Exists(due)).order_by("pk").values_list("pk", flat=True))


# Batches of live changes a connection may have out, while none is, however many the lanes behind have
# (batches_claim).
LIVE_EXTRA_BATCHES = 1


def batch_size_for(connection: Connection) -> int:
    wanted = config.effective(connection.pk).batch_size
    try:
        limit = connector_class(connection.kind).capabilities.batch_size
    except UnknownKind:
        limit = wanted
    return max(1, min(wanted, limit))


def _due(connection_id: int, now: datetime) -> Any:
    """The target's jobs a claim may take now: due, past their next attempt and fence, claimed by no one."""
    due = (
        SyncJob.objects.filter(target_id=connection_id, state__in=transitions.DUE)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(fence_until__isnull=True) | Q(fence_until__lte=now))
    )
    return transitions.unclaimed(due, now=now)


def batches_claim(*, connection: Connection, now: datetime, force: bool = False) -> list[list[int]]:
    """Claim the batches that are ready: full, or holding a job older than the flush interval.

    Lane by lane (live changes, then reads, then backfill and reconcile), oldest first: a backlog behind never
    queues ahead of a live change. One batch holds one lane's jobs, so it is sent in that lane.

    Each claim is one statement that claims only jobs no live claim holds, and skips rows another dispatcher
    is claiming (transitions.claim), so dispatchers on several machines never claim one job twice.
    """
    size = batch_size_for(connection)
    flush_before = now - timedelta(seconds=config.effective(connection.pk).flush_interval)
    batches: list[list[int]] = []
    # Back-pressure: a backlog stays unclaimed, so claims do not run out while their tasks wait behind
    # others in the broker. While no live batch is out, one beyond it is kept for live changes: a backlog in
    # the lanes behind that fills every place still leaves a live change one.
    in_flight = SyncJob.objects.filter(target_id=connection.pk, state=JobState.IN_FLIGHT).exclude(lease_owner="")
    claims = JobClaim.objects.filter(target_id=connection.pk, expires_at__gte=now)
    out = set(in_flight.values_list("lease_owner", "lane").distinct())
    out |= set(claims.values_list("owner", "lane").distinct())
    room = leases.outstanding_limit(now=now) - len({owner for owner, _ in out})
    live_room = max(room, LIVE_EXTRA_BATCHES) if all(lane != Lane.LIVE for _, lane in out) else room
    for lane in Lane:  # most urgent first
        limit = live_room if lane == Lane.LIVE else room
        waiting: set[str] = set()  # object types whose oldest jobs are neither a full batch nor old enough
        while len(batches) < limit:
            # The lane's oldest due job names the next group: one probe of job_due_lane_idx, read in its order,
            # where grouping the whole backlog by object type cost 12 ms a tick at 20,000 pending jobs.
            in_lane = _due(connection.pk, now).filter(lane=lane)
            head = in_lane.exclude(object_type__in=waiting) if waiting else in_lane
            oldest = head.order_by("updated_at", "id").values_list("object_type", "updated_at").first()
            if oldest is None:
                break
            object_type, since = oldest
            group = in_lane.filter(object_type=object_type).order_by("updated_at", "id")
            ready = force or since <= flush_before or len(group.values_list("id", flat=True)[:size]) >= size
            if not ready:
                waiting.add(object_type)  # fewer than a batch, so skipping them later reads at most that many
                continue
            lease = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
            ids = transitions.claim(group, size=size, owner=leases.lease_owner(), lease_until=lease, now=now)
            if not ids:
                break  # another dispatcher holds them: it is working this target now
            batches.append(ids)
    return batches


# --- running a batch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    job: SyncJob
    link: RecordLink | None  # the record's link in the target, if it has one
    record: OutboundRecord | None  # None: nothing to send (skipped, or refused before the call)
    refused: ConnectorError | None = None
    skip: tuple[str, str] = ("unchanged", "the target already holds this state")


def batch_run(*, job_ids: Sequence[int], now: datetime | None = None) -> dict[str, int]:
    """Send one claimed batch through its connector; write an attempt and a state for every job.

    Every result of the batch is written in one transaction with bulk statements (attempts,
    links, states): per-job writes made the database, not the target, the drain's bottleneck.
    """
    now = now or timezone.now()
    owner = leases.lease_owner()
    lease = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    taken = transitions.start(job_ids, owner=owner, lease_until=lease, now=now)
    if not taken:
        return {"claimed": 0}
    # Every line of this batch (its CRM calls included) carries the request ids of the events it
    # sends, so one id finds a record's whole journey; the per-job lines carry their own.
    context = request_id_var.set(",".join(_request_ids(owner)))
    try:
        return {"claimed": taken, **_run(owner, now)}
    except DatabaseError as exc:
        # The database went away mid-batch (a restart, a failover): the worker lives on, so nothing reaps
        # its lease. Hand the jobs back as soon as the database answers again, fenced if a call was cut off.
        fence = leases.call_fence(http.interrupted_call())
        released = leases.release_when_back(owner, fence, until=lease)
        fenced = fence.isoformat() if fence else None
        extra = {"jobs": released, "reason": repr(exc), "fenced_until": fenced}
        logger.warning("batch cut off by a database error; leases returned", extra=extra)
        raise
    except BaseException as exc:
        if isinstance(exc, Exception):
            raise  # a bug: the lease runs out and the jobs come back, slowly enough not to spin
        # Stopping (SIGTERM, django-q2's timeout, Ctrl-C): hand the jobs back now rather than after
        # the lease. A call already made is sent again later: an upsert of the same state. A call cut
        # off mid-way may still land at the target: the jobs are fenced until it no longer can, so no
        # newer state is sent first and then overwritten by the older one (docs/architecture.md).
        fence = leases.call_fence(http.interrupted_call())
        released = leases.leases_release(owner=owner, fence_until=fence)
        fenced = fence.isoformat() if fence else None
        logger.warning(
            "batch interrupted; leases returned", extra={"jobs": released, "reason": repr(exc), "fenced_until": fenced}
        )
        raise
    finally:
        request_id_var.reset(context)


def _request_ids(owner: str) -> list[str]:
    mine = SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT)  # the state: indexed (job_open_idx)
    rows = mine.values_list("last_event__request_id", flat=True)
    return sorted({request_id for request_id in rows if request_id})


def _run(owner: str, now: datetime) -> dict[str, int]:
    jobs = list(
        SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT).select_related("target", "last_event")
    )
    connection = jobs[0].target
    work = jobs_prepare(jobs)
    outcomes: list[Outcome] = []
    for item in work:
        if item.refused is not None:
            outcomes.append(Outcome(item.job, JobState.FAILED, item.refused, attempt=AttemptOutcome.ERROR))
        elif item.record is None:
            outcomes.append(Outcome(item.job, JobState.SKIPPED, None, attempt=AttemptOutcome.SKIPPED, skip=item.skip))
    to_send = [item for item in work if item.record is not None]
    if to_send:
        outcomes.extend(_send(connection, to_send, now))
    counts: dict[str, int] = defaultdict(int)
    for state in outcomes_save(outcomes, owner=owner, now=now):
        counts[state] += 1
    return counts


def jobs_prepare(jobs: Sequence[SyncJob]) -> list[Claimed]:
    """What would be sent for each job of one target (its record link, its payload), or why nothing is.

    The one preparation every sender uses: a batch run, a backfill's Bulk job and its dry run.
    """
    if not jobs:
        return []
    links = _links(jobs)
    own = _system_a_ids(jobs) if jobs[0].target.kind == "system_a" else set()
    return [
        _prepare(job, links.get(job.record_id, []), own_id=job.record_id if job.record_id in own else None)
        for job in jobs
    ]


def results_outcomes(
    connection: Connection,
    items: Sequence[Claimed],
    results: Sequence[PushResult],
    call_error: ConnectorError | None,
    duration_ms: int,
) -> list[Outcome]:
    """A call's results as job outcomes, the connection's health reported to its breaker on the way."""
    _breaker_report(connection, call_error or _connection_failure(results), timezone.now(), probe=False)
    return [_outcome(item, result, duration_ms) for item, result in zip(items, results, strict=True)]


def _links(jobs: Sequence[SyncJob]) -> dict[str, list[RecordLink]]:
    found: dict[str, list[RecordLink]] = defaultdict(list)
    for link in RecordLink.objects.filter(system_id=jobs[0].target_id, record_id__in={job.record_id for job in jobs}):
        found[link.record_id].append(link)
    return found


def _system_a_ids(jobs: Sequence[SyncJob]) -> set[str]:
    """Records System A itself posted: their id is System A's, so a change from a CRM updates that
    record in System A instead of creating another, even before any link to System A exists."""
    records = {job.record_id for job in jobs}
    return set(SyncEvent.objects.filter(source=SYSTEM_A, record_id__in=records).values_list("record_id", flat=True))


def _link_for(job: SyncJob, target_object: str, links: Sequence[RecordLink]) -> RecordLink | None:
    """The record's link in the target: the one to the same target object, whichever way it was made.

    A record first seen in a CRM is linked under the CRM's object name ("Contact"); System A may
    name it otherwise ("contact"): matching on the target object keeps a later write an update of
    that record, never a second create.
    """
    same_object = [link for link in links if link.external_object == target_object]
    return next(iter(same_object), None) or next((link for link in links if link.object_type == job.object_type), None)


def _prepare(job: SyncJob, links: Sequence[RecordLink], *, own_id: str | None = None) -> Claimed:
    event = job.last_event
    spec = target_payload(event.routing, job.target.name) if event else None
    target_object = (spec["object"] if spec else "") or job.object_type
    link = _link_for(job, target_object, links)
    external_id = link.external_id if link else own_id
    if event is None:  # never guess: a missing event must not turn into a delete
        return Claimed(
            job,
            link,
            None,
            ConnectorError(
                "the event behind this job is gone; post the record again", code="EVENT_MISSING", permanent=True
            ),
        )
    if event.operation == "delete":
        if spec and spec.get("delete") == "soft_delete":
            marker = {spec["soft_delete_field"]: True}
            return Claimed(job, link, OutboundRecord(job.record_id, target_object, "upsert", marker, external_id))
        if external_id is None:  # created and deleted before it was ever sent, or never synced: nothing to undo
            return Claimed(job, link, None, skip=("never_synced", "the target never received this record"))
        return Claimed(job, link, OutboundRecord(job.record_id, target_object, "delete", {}, external_id))
    fields = spec.get("fields") if spec else event.payload
    fields = dict(fields or {})
    if link is not None and _holds(link.last_values, fields):
        return Claimed(job, link, None)
    missing = [] if external_id is not None else _missing_required(job.target, target_object, fields)
    if missing:
        return Claimed(
            job,
            link,
            None,
            ConnectorError(
                f"{', '.join(missing)} required to create a {target_object} in {job.target.name}; nothing was sent",
                code="REQUIRED_FIELD_MISSING",
                permanent=True,
                fields=missing,
            ),
        )
    return Claimed(job, link, OutboundRecord(job.record_id, target_object, "upsert", fields, external_id))


def _holds(known: dict[str, Any], fields: dict[str, Any]) -> bool:
    """The target already holds these values, as far as the link knows (what we last wrote or last synced from it)."""
    empty = (None, "")
    return bool(known) and all(v == known.get(k) or (v in empty and known.get(k) in empty) for k, v in fields.items())


def _missing_required(connection: Connection, object_type: str, fields: dict[str, Any]) -> list[str]:
    """Checked against the connector's schema before any call: a record that cannot be valid
    fails at once, permanently, and costs no quota."""
    try:
        objects = connector_class(connection.kind).capabilities.objects
    except UnknownKind:
        return []
    required = (objects.get(object_type) or {}).get("required") or []
    return [name for name in required if fields.get(name) in (None, "", [])]


def _send(connection: Connection, items: list[Claimed], now: datetime) -> list[Outcome]:
    gate, look_again = breaker_allow(connection, now)
    if gate is Gate.WAIT:  # the breaker is open: no call, the jobs wait without spending an attempt
        error = NotSent(
            "circuit breaker open: the connection is failing",
            code="BREAKER_OPEN",
            retry_after=(look_again - now).total_seconds() if look_again else None,
        )
        return [Outcome(item.job, JobState.RETRYING, error, counts=False) for item in items]
    records = [item.record for item in items if item.record is not None]
    started = timezone.now()
    call_error: ConnectorError | None = None
    connector: Connector | None = None
    try:
        connector = throttled_connector(connection, lane=Lane(min(item.job.lane for item in items)))
        results = connector.push(records)
    except ConnectorError as exc:
        call_error = exc
    except Exception as exc:  # a bug or a broken config must not leave the batch in flight
        logger.exception("connector failed", extra={"connection": connection.name})
        call_error = ConnectorError(f"{type(exc).__name__}: {exc}", code="connector_exception")
    if call_error is not None:
        results = [PushResult(r.record_id, "error", external_id=r.external_id, error=call_error) for r in records]
    if connector is not None:
        _redact_errors(connector, [r.error for r in results if r.error is not None])
    # The cool-down runs from when the failure was seen, not from when the batch began.
    _breaker_report(connection, call_error or _connection_failure(results), timezone.now(), probe=gate is Gate.PROBE)
    duration = int((timezone.now() - started).total_seconds() * 1000)
    return [_outcome(item, result, duration) for item, result in zip(items, results, strict=True)]


def _redact_errors(connector: Connector, found: Sequence[ConnectorError]) -> None:
    for error in found:
        error.message = connector.redact(error.message)


def _connection_failure(results: Sequence[PushResult]) -> ConnectorError | None:
    """A connector that sends record by record reports a failed connection in a record's result."""
    for result in results:
        error = result.error
        if error is None:
            continue
        status = error.http_status or 0
        if not_their_fault(error) or error.code in ("timeout", "connection_error") or status >= 500:
            return error
        if error.pause_connection or status in (401, 403, 408, 429):
            return error
    return None


def _breaker_report(connection: Connection, error: ConnectorError | None, now: datetime, *, probe: bool) -> None:
    """Only the connection's health moves the breaker: a record refused for its data does not."""
    if error is None:
        breaker_success(connection, probe=probe)
    elif not_their_fault(error):
        if probe:
            breaker_release_probe(connection)
    elif not error.permanent or error.pause_connection or error.http_status in (401, 403):
        breaker_failure(
            connection, reason=f"{error.code}: {error.message}", now=now, probe=probe, at_once=error.pause_connection
        )
    elif probe:
        breaker_success(connection, probe=True)  # it answered: the connection works, the request was wrong


def throttled_connector(connection: Connection, *, lane: Lane = Lane.LIVE) -> Connector:
    """The connector with the throttle in its HTTP seam: our window and the target's own limits, seen from
    `lane` (backfill and reconcile see the window full sooner, and stop at the allowance's floor)."""
    knobs = config.effective(connection.pk)
    backend = throttle()
    share = lane_share(
        lane, live_reserve_percent=knobs.lane_live_reserve_percent, read_reserve_percent=knobs.lane_read_reserve_percent
    )
    gate = gate_for(
        connection,
        limit=knobs.rate_limit_calls,
        window=knobs.rate_limit_window,
        backend=backend,
        lane=lane,
        share=share,
        floor_percent=knobs.backfill_floor_percent,
    )
    return connector_for(connection, gate=gate, observe=holds.observer(connection, backend))


def _outcome(item: Claimed, result: PushResult, duration_ms: int) -> Outcome:
    job, error = item.job, result.error
    attempt = AttemptOutcome.ERROR if error else AttemptOutcome.SUCCESS
    if error is not None and not_their_fault(error):
        attempt = AttemptOutcome.HELD  # waiting for quota is not a failure: no alert counts it as one
    if error is None:
        linked = item.record if item.record is not None and item.record.operation != "delete" else None
        return Outcome(
            job,
            JobState.SYNCED,
            None,
            attempt=attempt,
            duration_ms=duration_ms,
            sent=linked,
            external_id=result.external_id or "",
            link_object_type=item.link.object_type if item.link else job.object_type,
        )
    if not_their_fault(error):  # handed back, not counted as an attempt
        return Outcome(job, JobState.RETRYING, error, counts=False, attempt=attempt, duration_ms=duration_ms)
    exhausted = job.attempts + 1 >= config.effective(job.target_id).max_attempts
    state = JobState.FAILED if error.permanent or exhausted else JobState.RETRYING
    return Outcome(job, state, error, attempt=attempt, duration_ms=duration_ms)
