"""Writes to the sync tables. Views, commands and tasks call these and nothing else."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from uuid_utils.compat import uuid7

from crms.models import Connection
from crms.selectors import connections_by_name
from recordsync.errors import Conflict
from recordsync.metrics import EVENTS_ACCEPTED
from rules.engine import decide, event_context
from rules.selectors import rule_set_current
from sync.contracts import SYSTEM_A
from sync.contracts import EventInput as EventInput  # its old home, for one release (CHANGELOG)
from sync.delivery import dispatch
from sync.ingest import conflicts, outbox, reads
from sync.ingest.outbox import JobKey
from sync.ingest.routing import Route, changed_fields, route_event
from sync.models import JobState, Lane, SyncConflict, SyncEvent

logger = logging.getLogger("recordsync.sync")

# Concurrent requests with one idempotency key race on its unique index; the losers
# retry and then find the winner's event. Two tries are enough; three leave slack.
_INGEST_TRIES = 3


@dataclass(frozen=True)
class IngestResult:
    answers: list[dict[str, Any]]
    replayed: bool


def event_ingest(
    *,
    items: Sequence[EventInput],
    idempotency_key: str | None,
    is_batch: bool,
    request_id: str,
    lane: Lane = Lane.LIVE,
) -> IngestResult:
    """Store events and their jobs in one transaction; queue dispatch after commit.

    `lane`: whose turn the jobs take at the target's window (a backfill or a reconcile queues behind live
    changes; a live change to a record a backfill queued moves that job to the front).

    An item whose idempotency key was seen with the same body gets its first answer back
    and creates nothing; the same key with another body is refused (409).
    """
    keys = _idempotency_keys(items, idempotency_key, is_batch)
    hashes = [_hash(item.raw) for item in items]
    for attempt in range(_INGEST_TRIES):
        try:
            return _ingest_once(items, keys, hashes, is_batch, request_id, lane)
        except IntegrityError:
            if attempt == _INGEST_TRIES - 1:
                raise
            logger.info("idempotency race lost; retrying", extra={"try": attempt + 1})
    raise AssertionError("unreachable")


def _idempotency_keys(items: Sequence[EventInput], header_key: str | None, is_batch: bool) -> list[str]:
    keys: list[str] = []
    seen: dict[str, int] = {}
    errors: dict[str, str] = {}
    for index, item in enumerate(items):
        if item.event_id:
            key = f"event:{item.event_id}"
        elif header_key:
            key = f"header:{header_key}#{index}" if is_batch else f"header:{header_key}"
        else:
            key = f"auto:{uuid7()}"  # time-ordered: new keys go in at one end of the unique index
        if key in seen:
            errors[f"[{index}].event_id"] = f"Repeats the event_id of item [{seen[key]}]; each event needs its own id."
        seen[key] = index
        keys.append(key)
    if errors:
        raise ValidationError(errors)
    return keys


def _hash(raw: Any) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _ingest_once(
    items: Sequence[EventInput], keys: list[str], hashes: list[str], is_batch: bool, request_id: str, lane: Lane
) -> IngestResult:
    # Keys we made up ourselves ("auto:<uuid7>") cannot have been seen: no lookup, and on
    # PostgreSQL the events and jobs go in one statement, atomic on its own (no BEGIN/COMMIT).
    given = [key for key in keys if not key.startswith("auto:")]
    reading = any(item.operation == "read" for item in items)
    if not given and outbox.one_statement_available() and not reading:
        try:
            everything = list(range(len(items)))
            stored, _ = _store(items, keys, hashes, everything, is_batch, request_id, one_statement=True, lane=lane)
            return IngestResult([stored[i] for i in range(len(items))], replayed=False)
        except _SeenBefore:
            pass  # nothing was written: the transaction below checks what a known record needs
    with transaction.atomic():
        answers, replayed = _store_keyed(items, keys, hashes, is_batch, request_id, lane)
    return IngestResult([answers[i] for i in range(len(items))], replayed=replayed)


def _store_keyed(
    items: Sequence[EventInput],
    keys: list[str],
    hashes: list[str],
    is_batch: bool,
    request_id: str,
    lane: Lane = Lane.LIVE,
) -> tuple[dict[int, dict[str, Any]], bool]:
    """In the caller's transaction: the items whose keys are new, then the decisions of the conflicts they
    raised (stored here, by this ingest, not by a second one started from inside it). Answers by index, and
    whether every item was a replay."""
    given = [key for key in keys if not key.startswith("auto:")]
    existing = {e.idempotency_key: e for e in SyncEvent.objects.filter(idempotency_key__in=given)} if given else {}
    _refuse_reused_keys(keys, hashes, existing, is_batch)
    fresh = [i for i, key in enumerate(keys) if key not in existing]
    answers: dict[int, dict[str, Any]] = {i: existing[key].response for i, key in enumerate(keys) if key in existing}
    if fresh:
        stored, resolutions = _store(items, keys, hashes, fresh, is_batch, request_id, one_statement=False, lane=lane)
        answers.update(stored)
        _resolutions_store(resolutions, request_id)
    return answers, not fresh


def _resolutions_store(resolutions: Sequence[conflicts.Resolution], request_id: str) -> None:
    """The events carrying conflicts' decisions. They are never judged again (their routing is decided), so
    storing them raises no further decisions."""
    decided = [item for resolution in resolutions for item in resolution.items]
    if decided:
        keys = _idempotency_keys(decided, None, True)
        _store_keyed(decided, keys, [_hash(item.raw) for item in decided], True, request_id)
    for resolution in resolutions:
        resolution.release()


def conflict_resolve(
    conflict: SyncConflict,
    choices: dict[str, conflicts.Side],
    *,
    by: str,
    note: str = "",
    system_a: Connection | None = None,
    now: datetime | None = None,
) -> SyncConflict:
    """A person's decision on a conflict (the admin's review page): carried out, its events stored, in one
    transaction. Both sides end with the chosen state."""
    with transaction.atomic():
        resolution = conflicts.decide(conflict, choices, by=by, note=note, system_a=system_a, now=now)
        _resolutions_store([resolution], request_id="")
    return resolution.conflict


class _SeenBefore(Exception):
    """The one-statement write found a record with a job already: a change to it may be late, deleted or
    in conflict, checks that need the transaction the one-statement write does without."""


def _refuse_reused_keys(keys: list[str], hashes: list[str], existing: dict[str, SyncEvent], is_batch: bool) -> None:
    fields = []
    for index, (key, digest) in enumerate(zip(keys, hashes, strict=True)):
        event = existing.get(key)
        if event is not None and event.request_hash != digest:
            name = f"[{index}].event_id" if is_batch else "event_id"
            fields.append({"field": name, "message": f"Key already used by event {event.id} with a different body."})
    if fields:
        raise Conflict(
            "This idempotency key was already used with a different body. Send a new key for a new change.",
            code="idempotency_key_reused",
            fields=fields,
        )


def _store(
    items: Sequence[EventInput],
    keys: list[str],
    hashes: list[str],
    fresh: list[int],
    is_batch: bool,
    request_id: str,
    *,
    one_statement: bool,
    lane: Lane,
) -> tuple[dict[int, dict[str, Any]], list[conflicts.Resolution]]:
    now = timezone.now()
    connections = connections_by_name()
    routes = _route_all(items, fresh, connections, is_batch, now, seen_before=not one_statement)
    events: list[SyncEvent] = []
    for index in fresh:
        item = items[index]
        events.append(
            SyncEvent(
                id=uuid7(),
                idempotency_key=keys[index],
                request_hash=hashes[index],
                source=item.source,
                operation=item.operation,
                object_type=item.object_type,
                record_id=item.record_id,
                payload=item.data,
                occurred_at=item.occurred_at or now,
                received_at=now,
                request_id=request_id,
                routing=routes[index].decision,
            )
        )
    rows = _job_rows(events, [routes[i] for i in fresh])
    if one_statement:  # only records never seen before: nothing to supersede or conflict with
        written = outbox.events_and_jobs_write(events, rows, now, lane)
        if written is None:
            raise _SeenBefore
        states = written
    else:
        states = outbox.jobs_upsert(rows, now, lane) if rows else {}
    answers: dict[int, dict[str, Any]] = {}
    for index, event in zip(fresh, events, strict=True):
        answers[index] = _answer(event, routes[index], states)
        if not event.idempotency_key.startswith("auto:"):  # only a client's key can be replayed
            event.response = answers[index]
    resolutions: list[conflicts.Resolution] = []
    if not one_statement:
        outbox.events_insert(events)
        checked = [
            (event, routes[i])
            for i, event in zip(fresh, events, strict=True)
            if items[i].routing is None and not items[i].conflict_resolution
        ]
        resolutions = conflicts.detect(checked, connections, now)
        _reads_plan([e for e in events if e.operation == "read" and e.routing.get("read_from")])
    target_ids = sorted({c.pk for i in fresh for c in routes[i].targets})
    if target_ids:
        transaction.on_commit(lambda: dispatch.nudge(target_ids))
    for event in events:
        EVENTS_ACCEPTED.labels(event.source, event.operation).inc()
        logger.info(
            "event accepted",
            extra={
                "event_id": str(event.id),
                "record_id": event.record_id,
                "object_type": event.object_type,
                "operation": event.operation,
                "source": event.source,
                "targets": event.routing.get("targets", []),
            },
        )
    return answers, resolutions


def events_route(items: Sequence[EventInput], now: datetime) -> list[Route]:
    """Where each event would go, as an ingest would decide it; writes nothing (a backfill's dry run)."""
    routes = _route_all(items, list(range(len(items))), connections_by_name(), True, now)
    return [routes[index] for index in range(len(items))]


def _route_all(
    items: Sequence[EventInput],
    fresh: list[int],
    connections: dict[str, Connection],
    is_batch: bool,
    now: datetime,
    *,
    seen_before: bool = True,
) -> dict[int, Route]:
    """Rules decide when there are any; otherwise the foundation's default routing. Either way the
    requested targets are checked first, so a bad one is a 400 and not a silent skip."""
    rule_set = rule_set_current()
    changed = changed_fields(items, fresh) if rule_set is not None and rule_set.uses_changed else {}
    # Records never seen before (the one-statement path checked) have no delete to look up.
    deleted = deletions(items, fresh) if seen_before else {}
    reading = {items[i].record_id for i in fresh if items[i].operation == "read"}
    read_links = reads.links_for_reads(reading) if reading else {}
    routes: dict[int, Route] = {}
    errors: dict[str, str] = {}
    for index in fresh:
        item = items[index]
        route = route_event(
            operation=item.operation, source=item.source, requested=item.targets, connections=connections
        )
        gone = deleted.get(item.record_id)
        late = gone is not None and item.operation not in ("delete", "read") and _resurrects(item, gone, now)
        if item.routing is not None:
            route = Route([connections[name] for name in item.routing["targets"]], item.routing)
        elif item.operation == "read":
            route = Route([], reads.read_routing(item.record_id, read_links.get(item.record_id, [])))
        elif item.skip_reason:
            route = Route([], {"mode": "skipped", "targets": [], "reason": item.skip_reason})
        elif late and gone is not None:
            reason = f"the record was deleted (by {gone[1]} at {gone[0].isoformat()}); a later change never revives it"
            route = Route([], {"mode": "skipped", "targets": [], "reason": reason, "deleted_by": str(gone[2])})
        elif rule_set is not None and item.operation != "read" and not route.errors:
            context = event_context(
                operation=item.operation,
                source=item.source,
                object_type=item.object_type,
                record_id=item.record_id,
                data=item.data,
                occurred_at=item.occurred_at or now,
                changed=changed.get(index, sorted(item.data or {})),
            )
            decision = decide(rule_set, context, connections, item.targets)
            route = Route(decision.targets, decision.routing)
        if item.source != "system_a" and item.source not in connections:
            route.errors["source"] = f"Unknown source '{item.source}': use 'system_a' or a connection name."
        prefix = f"[{index}]." if is_batch else ""
        errors.update({f"{prefix}{field}": message for field, message in route.errors.items()})
        routes[index] = route
    if errors:
        raise ValidationError(errors)
    return routes


def _reads_plan(events: list[SyncEvent]) -> None:
    """A read event's waiting rows go in with it; the reads run on a worker after the commit."""
    if not events:
        return
    for event in events:
        reads.reads_plan(event)
    ids = [str(e.id) for e in events]
    transaction.on_commit(lambda: dispatch.reads_queue(ids))


def deletions(items: Sequence[EventInput], fresh: list[int]) -> dict[str, tuple[datetime, str, Any]]:
    """The latest delete of each record (when, by whom, which event), from the log and earlier items of the batch."""
    found: dict[str, tuple[datetime, str, Any]] = {}
    records = {items[i].record_id for i in fresh}
    rows = SyncEvent.objects.filter(record_id__in=records, operation="delete").order_by("occurred_at")
    for record_id, occurred_at, source, event_id in rows.values_list("record_id", "occurred_at", "source", "id"):
        found[record_id] = (occurred_at, source, event_id)
    return found


def _resurrects(item: EventInput, gone: tuple[datetime, str, Any], now: datetime) -> bool:
    """A deleted record never comes back from a late change: anything older than the delete, and any
    change from a CRM after it. System A owns its ids: its own later change (a re-create) goes through."""
    if item.source != SYSTEM_A:
        return True
    return (item.occurred_at or now) <= gone[0]


def _job_rows(events: list[SyncEvent], routes: list[Route]) -> dict[JobKey, tuple[int, SyncEvent]]:
    """One job per (record, target): several events for one record in a batch bump it once each."""
    rows: dict[JobKey, tuple[int, SyncEvent]] = {}
    for event, route in zip(events, routes, strict=True):
        for target in route.targets:
            key = (event.record_id, event.object_type, event.source, target.pk)
            bumps, latest = rows.get(key, (0, event))
            if (event.occurred_at, 1) >= (latest.occurred_at, 0):
                latest = event
            rows[key] = (bumps + 1, latest)
    return rows


def _answer(event: SyncEvent, route: Route, states: dict[JobKey, tuple[str, datetime]]) -> dict[str, Any]:
    query = urlencode({"object_type": event.object_type, "source": event.source})

    def state(target: Connection) -> str:
        current, newest = states[(event.record_id, event.object_type, event.source, target.pk)]
        return JobState.SUPERSEDED if event.occurred_at < newest else current

    return {
        "event_id": str(event.id),
        "record_id": event.record_id,
        "object_type": event.object_type,
        "source": event.source,
        "operation": event.operation,
        "jobs": [{"target": t.name, "state": state(t)} for t in route.targets],
        "routing": route.decision,
        "status_url": f"/v1/sync/status/{quote(event.record_id, safe='')}?{query}",
    }
