"""What a backfill will do, checked before it runs: the plan, its counts, and what every part of a run shares.

A plan names a source, a target or all of them, an object and a start; `backfill_plan` refuses what cannot
run with a message naming the option. `patiently` retries a read that failed for the connection's sake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from crms.base import BulkWriter, Change, Connector, ConnectorError
from crms.models import Connection
from crms.registry import UnknownKind, connector_class
from sync.contracts import SYSTEM_A, EventInput
from sync.delivery.engine import (
    not_their_fault,
    throttled_connector,
)
from sync.delivery.outcomes import retry_wait
from sync.delivery.throttle import AllowanceFloor
from sync.models import Lane, SyncEvent

logger = logging.getLogger("recordsync.backfill")

ID_ROOT = "backfill:"  # backfill events' ids: backfill:<run id>:<original event id or the CRM change's id>


DEFAULT_BATCH = 500


MAX_BATCH = 10_000


REPLAYED = ("create", "update", "delete")  # a stored "read" is a request, not a state to replay


BULK_CALLS_PER_JOB = 8  # create, upload, close, two looks at its state, three result files


READ_TRIES = 5  # a read failing for the connection's sake (5xx, timeout) is tried this often before the run stops


sleep: Callable[[float], None] = time.sleep  # swappable: tests do not wait for Bulk jobs or throttles


T = TypeVar("T")


class BackfillRefused(Exception):
    """The command as given cannot run; the message names the option and the fix."""


class RunLost(Exception):
    """Another process took this run over (it saw no progress for STALE_AFTER): this one stops."""


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


def record_ids(plan: Plan, after: str, size: int) -> list[str]:
    """The next page of record ids, in keyset order."""
    events = _in_range(plan).filter(record_id__gt=after) if after else _in_range(plan)
    return list(events.order_by("record_id").values_list("record_id", flat=True).distinct()[:size])


def latest_events(plan: Plan, record_ids: Sequence[str]) -> list[SyncEvent]:
    """Each record's latest event: by occurred_at, then received_at."""
    events = _system_a_events(plan.object_type)
    newest = events.filter(record_id=OuterRef("record_id")).order_by("-occurred_at", "-received_at", "-id")
    return list(events.filter(record_id__in=record_ids, id=Subquery(newest.values("id")[:1])).order_by("record_id"))


def replay(event: SyncEvent, target: str, event_id: str | None) -> EventInput:
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


def since_cursor(kind: str, since: datetime | None) -> str:
    """A first cursor that starts the connector's changes at `since` (Connector.since_cursor); "" reads from
    the beginning, and the page filter drops what is older."""
    if since is None:
        return ""
    try:
        return connector_class(kind).since_cursor(since)
    except UnknownKind:
        return ""


def since_filter(changes: Sequence[Change], since: datetime | None) -> list[Change]:
    return [c for c in changes if since is None or c.modified_at >= since]


@dataclass
class Passes:
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
        connector = self.attach(throttled_connector(connection, lane=Lane.BULK))  # behind live changes
        try:
            yield connector
        except ConnectorError as exc:  # its text becomes the run's last_error, which tokens can read
            exc.message = connector.redact(exc.message)
            raise
        finally:
            connector.http.session.close()


def patiently(call: Callable[[], T]) -> T:
    """A command may wait: the throttle's "not yet" is waited out, a passing failure is tried again."""
    failures = 0
    while True:
        try:
            return call()
        except AllowanceFloor:
            raise  # the allowance left is kept for live changes: the run stops, resumable from its checkpoint
        except ConnectorError as exc:
            if not not_their_fault(exc):
                failures += 1
                if exc.permanent or failures >= READ_TRIES:
                    raise
            wait = retry_wait(exc, failures, counts=not not_their_fault(exc))
            logger.info("backfill call waits", extra={"code": exc.code, "wait": wait, "failures": failures})
            sleep(wait)
