"""Backfill: every record in range, replayed from System A's stored events or read from a CRM, sent to
one target through the same pipeline as live changes (events, rules, jobs, the engine).

A run's checkpoint lives in a BackfillRun row and is saved in the same transaction as each page's
events: Ctrl-C or a crash loses at most the page in hand, and that page is done again with the same
event ids, so nothing is stored or sent twice. Above the threshold of a target whose connector writes bulk
jobs (crms.base.BulkWriter, past the connection's threshold) the new jobs are claimed at
once (the dispatcher never sees them pending) and sent as bulk upsert jobs; below it they stay pending for
the engine, like any change. Nothing here knows a vendor: connectors say what they can.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from crms.base import BulkWriter, Change, Connector, ConnectorError, PushResult
from crms.models import Connection
from crms.registry import UnknownKind, connector_class
from sync import transitions
from sync.contracts import SYSTEM_A, EventInput
from sync.delivery.engine import (
    Claimed,
    batch_size_for,
    jobs_prepare,
    not_their_fault,
    results_outcomes,
    throttled_connector,
)
from sync.delivery.leases import lease_owner, leases_release
from sync.delivery.outcomes import Outcome, outcomes_save, retry_wait
from sync.inbound.changes import capture, echo_reason, in_flight_echo
from sync.ingest.services import event_ingest, events_route
from sync.models import BackfillRun, BreakerState, CircuitBreaker, JobState, RunState, SyncEvent, SyncJob

logger = logging.getLogger("recordsync.backfill")

ID_ROOT = "backfill:"  # backfill events' ids: backfill:<run id>:<original event id or the CRM change's id>
DEFAULT_BATCH = 500
MAX_BATCH = 10_000
REPLAYED = ("create", "update", "delete")  # a stored "read" is a request, not a state to replay
# A run whose process shows no progress for this long is taken as dead (killed, machine lost): another may resume it.
STALE_AFTER = timedelta(minutes=10)
BULK_CALLS_PER_JOB = 8  # create, upload, close, two looks at its state, three result files
BULK_WAIT_FIRST, BULK_WAIT_MAX = 1.0, 30.0  # seconds between looks at a running Bulk job, doubling
# A field set shared by fewer records than this in a page goes through the engine: a Bulk job for a handful of
# records costs more calls than the REST batch that carries them.
BULK_MIN_GROUP = 10
READ_TRIES = 5  # a read failing for the connection's sake (5xx, timeout) is tried this often before the run stops

sleep: Callable[[float], None] = time.sleep  # swappable: tests do not wait for Bulk jobs or throttles

T = TypeVar("T")


class BackfillRefused(Exception):
    """The command as given cannot run; the message names the option and the fix."""


class RunLost(Exception):
    """Another process took this run over (it saw no progress for STALE_AFTER): this one stops."""


# --- what to backfill ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    source: str  # "system_a", or the name of the connection read
    source_connection: Connection | None  # None: System A's stored events are replayed
    target: Connection
    object_type: str
    since: datetime | None
    batch: int  # records per page (System A) and per Bulk job


def since_parse(raw: str | None, *, now: datetime | None = None) -> datetime | None:
    """A date (midnight UTC) or an ISO-8601 time with its offset."""
    if not raw:
        return None
    example = "use e.g. 2026-11-01 or 2026-11-01T09:00:00Z"
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            value = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BackfillRefused(f"--since {raw!r} is not a date or an ISO-8601 time: {example}") from exc
    if value.tzinfo is None:
        raise BackfillRefused(f"--since {raw!r} has no UTC offset: {example} (a bare date is midnight UTC)")
    if value > (now or timezone.now()):
        raise BackfillRefused(f"--since {raw!r} is in the future: nothing would be backfilled")
    return value


def backfill_plan(*, source: str, target: str, object_type: str, since: datetime | None, batch: int) -> Plan:
    """Check the options against the connections; BackfillRefused names the option that is wrong."""
    if not 1 <= batch <= MAX_BATCH:
        raise BackfillRefused(f"--batch {batch}: use a number of records from 1 to {MAX_BATCH}")
    if source == target:
        raise BackfillRefused(f"--to {target!r} is also the source (--from): a backfill goes to another system")
    connections = {c.name: c for c in Connection.objects.all()}
    known = ", ".join(sorted(connections)) or "none configured"
    destination = connections.get(target)
    if destination is None:
        raise BackfillRefused(f"--to {target!r}: no connection has that name; known: {known}")
    _check_usable("--to", destination, "outbound")
    if source == SYSTEM_A:
        _check_system_a_object(object_type)
        return Plan(SYSTEM_A, None, destination, object_type, since, batch)
    origin = connections.get(source)
    if origin is None:
        raise BackfillRefused(f"--from {source!r}: no connection has that name; use system_a or one of: {known}")
    _check_usable("--from", origin, "inbound")
    objects = known_objects(origin)
    if objects is not None and object_type not in objects:
        raise BackfillRefused(
            f"--object {object_type!r}: {origin.name} ({origin.kind}) has no such object; "
            f"use one of: {', '.join(objects)}"
        )
    return Plan(source, origin, destination, object_type, since, batch)


def _check_usable(option: str, connection: Connection, direction: str) -> None:
    if not connection.enabled:
        raise BackfillRefused(f"{option} {connection.name!r}: the connection is disabled; enable it first")
    try:
        directions = connector_class(connection.kind).capabilities.directions
    except UnknownKind:
        raise BackfillRefused(f"{option} {connection.name!r}: unknown connector kind {connection.kind!r}") from None
    if direction not in directions:
        verb = "read from" if direction == "inbound" else "written to"
        raise BackfillRefused(f"{option} {connection.name!r}: a {connection.kind} connection cannot be {verb}")


def _check_system_a_object(object_type: str) -> None:
    """A misspelt object would replay nothing and say "done": refuse it, listing what System A has sent."""
    if _system_a_events(object_type).exists():
        return
    stored = SyncEvent.objects.filter(source=SYSTEM_A, operation__in=REPLAYED).values_list("object_type", flat=True)
    objects = ", ".join(sorted(set(stored))) or "none yet"
    raise BackfillRefused(f"--object {object_type!r}: System A has sent no such records; it has sent: {objects}")


def known_objects(connection: Connection) -> list[str] | None:
    """The objects a connection can be read for: its connector's, and any its config names (None: any)."""
    capabilities = connector_class(connection.kind).capabilities
    names = [name for name in capabilities.objects if name != "*"]
    names += connector_class(connection.kind).objects_named(connection.config or {})
    return sorted(set(names)) or None


def bulk_writer(connection: Connection) -> type[BulkWriter] | None:
    """The connection's connector class when it writes bulk jobs (crms.base.BulkWriter), else None."""
    try:
        cls = connector_class(connection.kind)
    except UnknownKind:
        return None
    return cls if issubclass(cls, BulkWriter) else None


def bulk_threshold(connection: Connection) -> int | None:
    """Records above which a backfill to this connection writes by bulk jobs; None: it has none."""
    writer = bulk_writer(connection)
    return None if writer is None else writer.bulk_threshold(connection.config or {})


def bulk_wanted(plan: Plan, records: int) -> bool:
    """Bulk jobs once the backfill is bigger than the target's threshold (BulkWriter.bulk_threshold)."""
    threshold = bulk_threshold(plan.target)
    return threshold is not None and records > threshold


def calls_per_record(connection: Connection) -> bool:
    """Whether a push to this connection costs about one call per record (else one per batch)."""
    try:
        return connector_class(connection.kind).capabilities.calls_per_record
    except UnknownKind:
        return False


# --- System A: the latest stored state of each record --------------------------------------------


def _system_a_events(object_type: str) -> QuerySet[SyncEvent]:
    """System A's own events for the object: not our earlier replays of them, nor the events that carry
    a conflict's decision (their data is System A's losing version, kept for the record)."""
    return (
        SyncEvent.objects.filter(source=SYSTEM_A, object_type=object_type, operation__in=REPLAYED)
        .exclude(idempotency_key__startswith=f"event:{ID_ROOT}")
        .exclude(idempotency_key__startswith="event:conflict:")
    )


def _in_range(plan: Plan) -> QuerySet[SyncEvent]:
    events = _system_a_events(plan.object_type)
    # A record whose latest event is older than `since` has no event since: filtering the events
    # is the same as filtering each record's latest.
    return events.filter(occurred_at__gte=plan.since) if plan.since else events


def plan_total(plan: Plan) -> int | None:
    """How many records a backfill holds, where a count is cheap: System A's; a CRM's is unknown."""
    return _in_range(plan).values("record_id").distinct().count() if plan.source_connection is None else None


def _record_ids(plan: Plan, after: str, size: int) -> list[str]:
    """The next page of record ids, in keyset order."""
    events = _in_range(plan).filter(record_id__gt=after) if after else _in_range(plan)
    return list(events.order_by("record_id").values_list("record_id", flat=True).distinct()[:size])


def _latest_events(plan: Plan, record_ids: Sequence[str]) -> list[SyncEvent]:
    """Each record's latest event: by occurred_at, then received_at."""
    events = _system_a_events(plan.object_type)
    newest = events.filter(record_id=OuterRef("record_id")).order_by("-occurred_at", "-received_at", "-id")
    return list(events.filter(record_id__in=record_ids, id=Subquery(newest.values("id")[:1])).order_by("record_id"))


def _replay(event: SyncEvent, target: str, event_id: str | None) -> EventInput:
    """The stored state again, to `target` only. occurred_at stays the original, so a replay is never
    newer than a later real change of the record."""
    raw = {
        "operation": event.operation,
        "record_id": event.record_id,
        "object_type": event.object_type,
        "source": SYSTEM_A,
        "targets": [target],
        "data": event.payload,
        "occurred_at": event.occurred_at.isoformat(),
        "event_id": event_id,
    }
    return EventInput(
        operation=event.operation,
        record_id=event.record_id,
        object_type=event.object_type,
        source=SYSTEM_A,
        targets=[target],
        data=event.payload,
        occurred_at=event.occurred_at,
        event_id=event_id,
        raw=raw,
    )


def run_prefix(run_pk: int) -> str:
    return f"{ID_ROOT}{run_pk}:"


# --- a CRM: every record, through its connector's changes() -------------------------------------


def since_cursor(kind: str, since: datetime | None) -> str:
    """A first cursor that starts the connector's changes at `since` (Connector.since_cursor); "" reads from
    the beginning, and the page filter drops what is older."""
    if since is None:
        return ""
    try:
        return connector_class(kind).since_cursor(since)
    except UnknownKind:
        return ""


def _since_filter(changes: Sequence[Change], since: datetime | None) -> list[Change]:
    return [c for c in changes if since is None or c.modified_at >= since]


@dataclass
class _Passes:
    """When to stop reading. A connector's last page (has_more False) is not always the end: a connector may
    cap one pass (a query's row limit), so a pass that found anything newer is followed by another, and the
    read ends at the first last page with nothing newer than what was already seen."""

    newest: datetime | None = None

    def more(self, changes: Sequence[Change], has_more: bool) -> bool:
        newest = max((c.modified_at for c in changes), default=None)
        advanced = newest is not None and (self.newest is None or newest > self.newest)
        if advanced:
            self.newest = newest
        return has_more or advanced


# --- running -----------------------------------------------------------------------------------


class CallCounter:
    """Counts the HTTP calls a connector makes (every answer passes the seam's `observe`)."""

    def __init__(self) -> None:
        self.calls = 0

    def attach(self, connector: Connector) -> Connector:
        observe = connector.http.observe

        def counted(response: Any) -> None:
            self.calls += 1
            if observe is not None:
                observe(response)

        connector.http.observe = counted
        return connector

    @contextmanager
    def connected(self, connection: Connection) -> Iterator[Connector]:
        """The connection's throttled connector, counted. Its HTTP session is closed at the end: a kept-alive
        socket holds a thread of the server it talks to (on the local mocks, with a database connection)."""
        connector = self.attach(throttled_connector(connection))
        try:
            yield connector
        except ConnectorError as exc:  # its text becomes the run's last_error, which tokens can read
            exc.message = connector.redact(exc.message)
            raise
        finally:
            connector.http.session.close()


@dataclass(frozen=True)
class Started:
    run: BackfillRun
    resumed: bool
    stopped_by: str = ""  # why the resumed run stopped last time


def backfill_start(*, plan: Plan, restart: bool, owner: str, now: datetime | None = None) -> Started:
    """Resume the latest run of this backfill unless it is done (or `restart`); else start a new one.

    Only the latest run is looked at: one abandoned by --restart is never resumed. A run held by a
    live process is refused; one whose process vanished (no progress for STALE_AFTER) is taken over.
    """
    now = now or timezone.now()
    latest = _runs(plan).order_by("-started_at", "-pk").first()
    if latest is not None and latest.state != RunState.DONE:
        free = Q(state=RunState.FAILED) | Q(owner="") | Q(owner=owner) | Q(updated_at__lt=now - STALE_AFTER)
        claimed = BackfillRun.objects.filter(free, pk=latest.pk).exclude(state=RunState.DONE)
        if restart:
            taken = claimed.update(
                state=RunState.FAILED,
                owner="",
                finished_at=now,
                updated_at=now,
                last_error="abandoned: started over with --restart",
            )
        else:
            taken = claimed.update(state=RunState.RUNNING, owner=owner, updated_at=now)
        if not taken:
            raise BackfillRefused(
                f"run {latest.pk} of this backfill is running in {latest.owner} (last progress "
                f"{latest.updated_at:%Y-%m-%d %H:%M:%S} UTC); wait for it, or if that process is gone, run this "
                f"again once it has shown no progress for {int(STALE_AFTER.total_seconds() // 60)} minutes"
            )
        if not restart:
            latest.refresh_from_db()
            return Started(latest, resumed=True, stopped_by=latest.last_error)
    total = plan_total(plan)
    run = BackfillRun.objects.create(
        source=plan.source,
        target=plan.target.name,
        object_type=plan.object_type,
        since=plan.since,
        owner=owner,
        total=total,
        started_at=now,
        updated_at=now,
    )
    return Started(run, resumed=False)


def _runs(plan: Plan) -> QuerySet[BackfillRun]:
    runs = BackfillRun.objects.filter(source=plan.source, target=plan.target.name, object_type=plan.object_type)
    return runs.filter(since=plan.since) if plan.since else runs.filter(since__isnull=True)


def run_owner() -> str:
    return f"sync_backfill-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def backfill_run(*, run: BackfillRun, plan: Plan, progress: Callable[[int], object] = lambda n: None) -> BackfillRun:
    """Page through the backfill from the run's checkpoint to the end; `progress` hears of each record handled.

    Stopped by Ctrl-C or an error, the run is marked failed with the reason and keeps its checkpoint.
    """
    calls = CallCounter()
    base_calls = run.api_calls
    try:
        if plan.source_connection is None:
            _replay_pages(run, plan, calls, base_calls, progress)
        else:
            _read_pages(run, plan, calls, base_calls, progress)
    except BaseException as exc:
        BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(
            state=RunState.FAILED,
            owner="",
            api_calls=base_calls + calls.calls,
            updated_at=timezone.now(),
            last_error=_stop_reason(run, exc),
        )
        raise
    finished = timezone.now()
    BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(
        state=RunState.DONE,
        owner="",
        finished_at=finished,
        updated_at=finished,
        api_calls=base_calls + calls.calls,
        last_error="",
    )
    run.refresh_from_db()
    logger.info("backfill done", extra={"run": run.pk, "processed": run.processed, "counts": run.counts})
    return run


def _stop_reason(run: BackfillRun, exc: BaseException) -> str:
    how = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{how} after {run.processed} record(s): {what}"[:2000]


def _replay_pages(
    run: BackfillRun, plan: Plan, calls: CallCounter, base_calls: int, progress: Callable[[int], object]
) -> None:
    while ids := _record_ids(plan, run.cursor, plan.batch):
        events = _latest_events(plan, ids)
        items = [_replay(e, plan.target.name, f"{run_prefix(run.pk)}{e.pk}") for e in events]
        _page(
            run,
            plan,
            cursor=ids[-1],
            write=partial(_replay_write, items, run.pk),
            calls=calls,
            base_calls=base_calls,
            progress=progress,
        )


def _replay_write(items: Sequence[EventInput], run_pk: int) -> tuple[int, Counter[str]]:
    keys = [f"event:{item.event_id}" for item in items]
    seen = SyncEvent.objects.filter(idempotency_key__in=keys).count()  # a page done before a crash: replays
    result = event_ingest(items=items, idempotency_key=None, is_batch=True, request_id=f"backfill:{run_pk}")
    routed = sum(1 for answer in result.answers if answer["jobs"])
    counts = Counter({"replayed": len(items) - seen, "already_replayed": seen, "not_routed": len(items) - routed})
    return len(items), counts


def _capture_write(
    connection: Connection, connector: Connector, changes: Sequence[Change], plan: Plan, run_pk: int
) -> tuple[int, Counter[str]]:
    counts = capture(
        connection=connection,
        connector=connector,
        changes=changes,
        now=timezone.now(),
        targets=[plan.target.name],
        id_prefix=run_prefix(run_pk),
    )
    return counts["captured"] + counts["echo"], counts


def _read_pages(
    run: BackfillRun, plan: Plan, calls: CallCounter, base_calls: int, progress: Callable[[int], object]
) -> None:
    connection = plan.source_connection
    assert connection is not None  # noqa: S101 - a CRM source
    cursor = run.cursor or since_cursor(connection.kind, plan.since)
    passes = _Passes()
    with calls.connected(connection) as connector:
        while True:
            page = _patiently(partial(connector.changes, plan.object_type, cursor or None))
            changes = _since_filter(page.changes, plan.since)
            write = partial(_capture_write, connection, connector, changes, plan, run.pk)
            _page(
                run, plan, cursor=page.cursor or "", write=write, calls=calls, base_calls=base_calls, progress=progress
            )
            cursor = page.cursor or ""
            if not passes.more(page.changes, page.has_more):
                return


def _page(
    run: BackfillRun,
    plan: Plan,
    *,
    cursor: str,
    write: Callable[[], tuple[int, Counter[str]]],
    calls: CallCounter,
    base_calls: int,
    progress: Callable[[int], object],
) -> None:
    """One page: its events (and jobs), the Bulk claim and the checkpoint in one transaction; then the
    Bulk send."""
    owner = lease_owner()
    started = timezone.now()
    with transaction.atomic():
        handled, counts = write()
        claimed = 0
        if bulk_wanted(plan, max(run.total or 0, run.processed + handled)):
            claimed = _bulk_claim(plan, run.pk, owner, started)
            counts["bulk_claimed"] += claimed
        _checkpoint(run, cursor=cursor, handled=handled, counts=counts, api_calls=base_calls + calls.calls)
    progress(handled)
    if claimed:
        sent = _bulk_send(plan, run, owner, calls)
        _counts_add(run, sent, api_calls=base_calls + calls.calls)


def _checkpoint(run: BackfillRun, *, cursor: str, handled: int, counts: Counter[str], api_calls: int) -> None:
    """Saved only while this process still holds the run; raising rolls the page back with it."""
    merged = Counter(run.counts)
    merged.update(counts)
    now = timezone.now()
    saved = BackfillRun.objects.filter(pk=run.pk, owner=run.owner, state=RunState.RUNNING).update(
        cursor=cursor, processed=run.processed + handled, counts=dict(merged), api_calls=api_calls, updated_at=now
    )
    if not saved:
        raise RunLost(f"run {run.pk} was taken over by another process; this one stops")
    run.cursor, run.processed, run.counts, run.api_calls = cursor, run.processed + handled, dict(merged), api_calls


def _counts_add(run: BackfillRun, counts: Counter[str], *, api_calls: int) -> None:
    merged = Counter(run.counts)
    merged.update(counts)
    run.counts, run.api_calls = dict(merged), api_calls
    BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(
        counts=run.counts, api_calls=api_calls, updated_at=timezone.now()
    )


def _patiently(call: Callable[[], T]) -> T:
    """A command may wait: the throttle's "not yet" is waited out, a passing failure is tried again."""
    failures = 0
    while True:
        try:
            return call()
        except ConnectorError as exc:
            if not not_their_fault(exc):
                failures += 1
                if exc.permanent or failures >= READ_TRIES:
                    raise
            wait = retry_wait(exc, failures, counts=not not_their_fault(exc))
            logger.info("backfill call waits", extra={"code": exc.code, "wait": wait, "failures": failures})
            sleep(wait)


# --- Bulk API 2.0 ----------------------------------------------------------------------------------


def _page_jobs(plan: Plan, run_pk: int, since: datetime) -> QuerySet[SyncJob]:
    """The target's due jobs this page's events just made or bumped."""
    return SyncJob.objects.filter(
        target=plan.target,
        state__in=transitions.DUE,
        updated_at__gte=since,
        last_event__idempotency_key__startswith=f"event:{run_prefix(run_pk)}",
    )


def prepared(jobs: Sequence[SyncJob]) -> list[Claimed]:
    """What the engine would send for each job (its own preparation)."""
    return jobs_prepare(jobs)


def _bulkable(item: Claimed) -> bool:
    """Bulk upserts match on the external-id field only: a linked record is updated by the CRM's own id
    (it may lack the key), and deletes are not upserts, so those go through the engine."""
    record = item.record
    return item.refused is None and record is not None and record.operation == "upsert" and not record.external_id


def _bulk_claim(plan: Plan, run_pk: int, owner: str, since: datetime) -> int:
    """Inside the page's transaction: the dispatcher never sees these jobs pending."""
    if CircuitBreaker.objects.filter(connection=plan.target).exclude(state=BreakerState.CLOSED).exists():
        return 0  # the connection is failing: the engine's breaker decides when to try again
    jobs = list(_page_jobs(plan, run_pk, since).select_related("target", "last_event"))
    groups = _bulk_groups([item for item in prepared(jobs) if _bulkable(item)])
    ids = [item.job.id for group in groups if len(group) >= BULK_MIN_GROUP for item in group]
    now = timezone.now()
    due = SyncJob.objects.filter(id__in=ids, state__in=transitions.DUE)
    return transitions.start(
        due, owner=owner, lease_until=now + timedelta(seconds=settings.SYNC_LEASE_SECONDS), now=now
    )


def _bulk_send(plan: Plan, run: BackfillRun, owner: str, calls: CallCounter) -> Counter[str]:
    """Send the claimed jobs as Bulk upserts, one job per object and field set; write their states, attempts
    and links with the engine's own outcomes_save. Stopped (Ctrl-C), the jobs go back to pending at once."""
    try:
        jobs = list(
            SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT).select_related("target", "last_event")
        )
        items = prepared(jobs)
        outcomes: list[Outcome] = []
        rest = [item.job.id for item in items if not _bulkable(item)]
        if rest:  # changed since the claim: the engine sends them
            transitions.to_pending(SyncJob.objects.filter(id__in=rest, lease_owner=owner), now=timezone.now())
        with calls.connected(plan.target) as connector:
            if not isinstance(connector, BulkWriter):
                raise TypeError(f"{plan.target.name} ({plan.target.kind}) writes no bulk jobs")
            for group in _bulk_groups([item for item in items if _bulkable(item)]):
                outcomes += _bulk_job(connector, plan.target, group, lambda: _heartbeat(run, owner))
        states = outcomes_save(outcomes, owner=owner, now=timezone.now())
    except BaseException:
        leases_release(owner=owner)
        raise
    return Counter(f"bulk_{state}" for state in states)


def _bulk_groups(items: Sequence[Claimed]) -> list[list[Claimed]]:
    """One Bulk job per object and set of fields: a CSV column a record lacks would be written as null."""
    groups: dict[tuple[str, tuple[str, ...]], list[Claimed]] = defaultdict(list)
    for item in items:
        assert item.record is not None  # noqa: S101 - bulkable items carry a record
        groups[(item.record.object_type, tuple(sorted(item.record.fields)))].append(item)
    return list(groups.values())


def _bulk_job(
    connector: BulkWriter, connection: Connection, items: Sequence[Claimed], heartbeat: Callable[[], None]
) -> list[Outcome]:
    records = [item.record for item in items if item.record is not None]
    started = time.monotonic()
    error: ConnectorError | None = None
    try:
        job_id = _patiently(lambda: connector.bulk_start(records[0].object_type, records))
        results = _bulk_wait(connector, job_id, heartbeat)
    except ConnectorError as exc:  # the job as a whole: every record retries later through the engine
        error = exc
        results = [PushResult(r.record_id, "error", error=exc) for r in records]
    duration = int((time.monotonic() - started) * 1000)
    return results_outcomes(connection, items, results, error, duration)


def _bulk_wait(connector: BulkWriter, job_id: str, heartbeat: Callable[[], None]) -> list[PushResult]:
    wait = BULK_WAIT_FIRST
    while True:
        results = _patiently(lambda: connector.bulk_poll(job_id))
        if results is not None:
            return results
        heartbeat()
        sleep(wait)
        wait = min(wait * 2, BULK_WAIT_MAX)


def _heartbeat(run: BackfillRun, owner: str) -> None:
    """A Bulk job may run for long: keep the jobs' lease and the run's liveness fresh meanwhile."""
    now = timezone.now()
    SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT).update(
        lease_expires_at=now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    )
    BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(updated_at=now)


# --- where a run's records stand -------------------------------------------------------------------


def backfill_job_states(run: BackfillRun) -> dict[str, int]:
    """The target's jobs whose latest event is one of this run's, by state."""
    rows = (
        SyncJob.objects.filter(
            target__name=run.target, last_event__idempotency_key__startswith=f"event:{run_prefix(run.pk)}"
        )
        .values("state")
        .annotate(n=Count("id"))
    )
    return {row["state"]: row["n"] for row in rows}


# --- dry run -------------------------------------------------------------------------------------


@dataclass
class Preview:
    """What a backfill would do, from reads only."""

    records: int = 0
    actions: Counter[str] = field(default_factory=Counter)  # create, update, delete, unchanged, echo, ...
    reads: int = 0  # API calls made to read the source
    bulk: bool = False
    bulk_jobs: int = 0
    pushes: int = 0  # REST calls to the target, about


def backfill_preview(*, plan: Plan, progress: Callable[[int], object] = lambda n: None) -> Preview:
    """Classify every record as the engine would (through its own _prepare and the record links) and count
    the calls the backfill would spend. Writes nothing; a CRM source is read (reads only)."""
    preview = Preview()
    if plan.source_connection is None:
        after = ""
        while ids := _record_ids(plan, after, plan.batch):
            _classify(plan, [_replay(e, plan.target.name, None) for e in _latest_events(plan, ids)], preview)
            preview.records += len(ids)
            after = ids[-1]
            progress(len(ids))
    else:
        preview.reads = _preview_reads(plan, preview, progress)
    _estimate_pushes(plan, preview)
    return preview


def _preview_reads(plan: Plan, preview: Preview, progress: Callable[[int], object]) -> int:
    connection = plan.source_connection
    assert connection is not None  # noqa: S101 - a CRM source
    calls = CallCounter()
    cursor = since_cursor(connection.kind, plan.since)
    seen: set[tuple[str, str, datetime]] = set()  # a pass's overlap is read again: count each change once
    passes = _Passes()
    with calls.connected(connection) as connector:
        while True:
            page = _patiently(partial(connector.changes, plan.object_type, cursor or None))
            fresh = [
                c
                for c in _since_filter(page.changes, plan.since)
                if (c.object_type, c.external_id, c.modified_at) not in seen
            ]
            seen.update((c.object_type, c.external_id, c.modified_at) for c in fresh)
            items, echoes = _as_captured(connection, connector, fresh, plan.target.name)
            preview.actions["echo"] += echoes
            _classify(plan, items, preview)
            preview.records += len(fresh)
            progress(len(fresh))
            cursor = page.cursor or ""
            if not passes.more(page.changes, page.has_more):
                return calls.calls


def _as_captured(
    connection: Connection, connector: Connector, changes: Sequence[Change], target: str
) -> tuple[list[EventInput], int]:
    """The events sync.inbound.changes.capture would make of these changes, without writing: (events, echoes)."""
    links = {
        (link.external_object, link.external_id): link
        for link in connection.links.filter(external_id__in={change.external_id for change in changes})
    }
    items: list[EventInput] = []
    echoes = 0
    for change in changes:
        view = connector.inbound(change)
        link = links.get((change.object_type, change.external_id))
        record_id = link.record_id if link else (view.record_id or f"{connection.name}-{change.external_id}")
        echo = None if change.deleted else echo_reason(link, view)
        if not change.deleted and echo is None and in_flight_echo(connection, link, view) is not None:
            echo = "echo: a write in flight"
        if echo:  # recorded, routed nowhere
            echoes += 1
            continue
        operation = "delete" if change.deleted else ("update" if link else "create")
        data = None if change.deleted else {k: v for k, v in view.fields.items() if link or v not in (None, "")}
        items.append(
            EventInput(
                operation=operation,
                record_id=record_id,
                object_type=change.object_type,
                source=connection.name,
                targets=[target],
                data=data,
                occurred_at=change.modified_at,
                event_id=None,
                raw=None,
            )
        )
    return items, echoes


def _classify(plan: Plan, items: Sequence[EventInput], preview: Preview) -> None:
    """Route the events as the ingest would, then ask the engine's _prepare what each job would send."""
    if not items:
        return
    routes = events_route(items, timezone.now())
    rows = SyncJob.objects.filter(target=plan.target, record_id__in={item.record_id for item in items})
    keys = rows.values_list("record_id", "object_type", "source", "last_occurred_at")
    newest = {(record, kind, source): at for record, kind, source, at in keys}
    jobs: list[SyncJob] = []
    for index, item in enumerate(items):
        route = routes[index]
        if plan.target.pk not in {target.pk for target in route.targets}:
            preview.actions["not_routed"] += 1  # a rule skipped it, or a later delete stops it
            continue
        held = newest.get((item.record_id, item.object_type, item.source))
        if held is not None and item.occurred_at is not None and item.occurred_at < held:
            preview.actions["superseded"] += 1  # the target's job already holds a newer change: nothing sent
            continue
        event = SyncEvent(
            operation=item.operation,
            object_type=item.object_type,
            record_id=item.record_id,
            source=item.source,
            payload=item.data,
            routing=route.decision,
            occurred_at=item.occurred_at or timezone.now(),
        )
        jobs.append(
            SyncJob(
                target=plan.target,
                source=item.source,
                object_type=item.object_type,
                record_id=item.record_id,
                last_event=event,
            )
        )
    for claimed in prepared(jobs):
        preview.actions[_action(claimed)] += 1


def _action(item: Claimed) -> str:
    if item.refused is not None:
        return "refused"  # fails before any call (a required field missing)
    if item.record is None:
        return "never_synced" if item.skip[0] == "never_synced" else "unchanged"
    if item.record.operation == "delete":
        return "delete"
    return "update" if item.record.external_id else "create"


def _estimate_pushes(plan: Plan, preview: Preview) -> None:
    """REST: a batch per call (creates, updates and deletes counted as separate calls), or about a call per
    record for connectors that write one at a time (Capabilities.calls_per_record). Bulk: a job per page of
    creates."""
    creates, updates, deletes = (preview.actions[name] for name in ("create", "update", "delete"))
    preview.bulk = bulk_wanted(plan, preview.records)
    if preview.bulk:
        preview.bulk_jobs, creates = math.ceil(creates / plan.batch), 0
    if calls_per_record(plan.target):
        preview.pushes = creates + updates + deletes
        return
    size = batch_size_for(plan.target)
    preview.pushes = sum(math.ceil(count / size) for count in (creates, updates, deletes))
