"""Writes to the sync tables. Views, commands and tasks call these and nothing else."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from crms.models import Connection
from recordsync.errors import Conflict
from sync import dispatch
from sync.models import JobState, SyncEvent, SyncJob
from sync.routing import Route, route_event

logger = logging.getLogger("recordsync.sync")

# Concurrent requests with one idempotency key race on its unique index; the losers
# retry and then find the winner's event. Two tries are enough; three leave slack.
_INGEST_TRIES = 3


@dataclass(frozen=True)
class EventInput:
    operation: str
    record_id: str
    object_type: str
    source: str
    targets: list[str] | None
    data: dict[str, Any] | None
    occurred_at: datetime | None
    event_id: str | None
    raw: Any  # the item exactly as sent, hashed to tell a replay from a reused key


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
) -> IngestResult:
    """Store events and their jobs in one transaction; queue dispatch after commit.

    An item whose idempotency key was seen with the same body gets its first answer back
    and creates nothing; the same key with another body is refused (409).
    """
    keys = _idempotency_keys(items, idempotency_key, is_batch)
    hashes = [_hash(item.raw) for item in items]
    for attempt in range(_INGEST_TRIES):
        try:
            return _ingest_once(items, keys, hashes, is_batch, request_id)
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
            key = f"auto:{uuid.uuid4()}"
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
    items: Sequence[EventInput], keys: list[str], hashes: list[str], is_batch: bool, request_id: str
) -> IngestResult:
    with transaction.atomic():
        existing = {e.idempotency_key: e for e in SyncEvent.objects.filter(idempotency_key__in=keys)}
        _refuse_reused_keys(keys, hashes, existing, is_batch)
        fresh = [i for i, key in enumerate(keys) if key not in existing]
        answers: dict[int, dict[str, Any]] = {
            i: existing[key].response for i, key in enumerate(keys) if key in existing
        }
        if fresh:
            answers.update(_store(items, keys, hashes, fresh, is_batch, request_id))
    return IngestResult([answers[i] for i in range(len(items))], replayed=not fresh)


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
    items: Sequence[EventInput], keys: list[str], hashes: list[str], fresh: list[int], is_batch: bool, request_id: str
) -> dict[int, dict[str, Any]]:
    now = timezone.now()
    connections = {c.name: c for c in Connection.objects.all()}
    routes = _route_all(items, fresh, connections, is_batch)
    events: list[SyncEvent] = []
    for index in fresh:
        item = items[index]
        events.append(
            SyncEvent(
                id=uuid.uuid4(),
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
    states = _upsert_jobs(events, [routes[i] for i in fresh], now)
    answers: dict[int, dict[str, Any]] = {}
    for index, event in zip(fresh, events, strict=True):
        event.response = _answer(event, routes[index], states)
        answers[index] = event.response
    SyncEvent.objects.bulk_create(events)
    target_ids = sorted({c.pk for i in fresh for c in routes[i].targets})
    if target_ids:
        transaction.on_commit(lambda: dispatch.nudge(target_ids))
    for event in events:
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
    return answers


def _route_all(
    items: Sequence[EventInput], fresh: list[int], connections: dict[str, Connection], is_batch: bool
) -> dict[int, Route]:
    routes: dict[int, Route] = {}
    errors: dict[str, str] = {}
    for index in fresh:
        item = items[index]
        route = route_event(
            operation=item.operation, source=item.source, requested=item.targets, connections=connections
        )
        if item.source != "system_a" and item.source not in connections:
            route.errors["source"] = f"Unknown source '{item.source}': use 'system_a' or a connection name."
        prefix = f"[{index}]." if is_batch else ""
        errors.update({f"{prefix}{field}": message for field, message in route.errors.items()})
        routes[index] = route
    if errors:
        raise ValidationError(errors)
    return routes


JobKey = tuple[str, str, str, int]


def _upsert_jobs(events: list[SyncEvent], routes: list[Route], now: datetime) -> dict[JobKey, str]:
    """Insert or bump one job per (record, target) in one statement, returning each job's state.

    Written as INSERT … ON CONFLICT DO UPDATE (the same SQL on PostgreSQL and SQLite) because the
    ORM cannot express "version = version + 1, keep in_flight/held": a job already in flight stays
    in flight with a higher version, so the worker's conditional finish sends it back to pending.
    """
    rows: dict[JobKey, tuple[int, SyncEvent]] = {}
    for event, route in zip(events, routes, strict=True):
        for target in route.targets:
            key = (event.record_id, event.object_type, event.source, target.pk)
            bumps, latest = rows.get(key, (0, event))
            if (event.occurred_at, 1) >= (latest.occurred_at, 0):
                latest = event
            rows[key] = (bumps + 1, latest)
    if not rows:
        return {}
    table = SyncJob._meta.db_table
    ops = connection.ops
    stamp = ops.adapt_datetimefield_value(now)
    event_pk = SyncEvent._meta.get_field("id")
    states: dict[JobKey, str] = {}
    ordered = sorted(rows.items())  # one lock order for every writer: no deadlocks between batches
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        values = ", ".join(["(%s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, '', '')"] * len(chunk))
        params: list[Any] = []
        for (record_id, object_type, source, target_id), (bumps, event) in chunk:
            params += [
                source, object_type, record_id, target_id, JobState.PENDING, bumps,
                event_pk.get_db_prep_value(event.id, connection),
                ops.adapt_datetimefield_value(event.occurred_at), stamp, stamp,
            ]  # fmt: skip
        sql = f"""
            INSERT INTO {table} (source, object_type, record_id, target_id, state, attempts, version,
                                 last_event_id, last_occurred_at, created_at, updated_at,
                                 last_error_code, last_error_message)
            VALUES {values}
            ON CONFLICT (record_id, object_type, source, target_id) DO UPDATE SET
                version = {table}.version + excluded.version,
                last_error_code = CASE WHEN {table}.state IN ('in_flight', 'held')
                                       THEN {table}.last_error_code ELSE '' END,
                last_error_message = CASE WHEN {table}.state IN ('in_flight', 'held')
                                          THEN {table}.last_error_message ELSE '' END,
                state = CASE WHEN {table}.state IN ('in_flight', 'held') THEN {table}.state ELSE 'pending' END,
                attempts = CASE WHEN {table}.state IN ('in_flight', 'held') THEN {table}.attempts ELSE 0 END,
                next_attempt_at = CASE WHEN {table}.state IN ('in_flight', 'held')
                                       THEN {table}.next_attempt_at ELSE NULL END,
                last_event_id = CASE WHEN excluded.last_occurred_at >= {table}.last_occurred_at
                                     THEN excluded.last_event_id ELSE {table}.last_event_id END,
                last_occurred_at = CASE WHEN excluded.last_occurred_at >= {table}.last_occurred_at
                                        THEN excluded.last_occurred_at ELSE {table}.last_occurred_at END,
                updated_at = excluded.updated_at
            RETURNING record_id, object_type, source, target_id, state, version
        """  # noqa: S608 - table name from the model, values bound as parameters
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for record_id, object_type, source, target_id, state, version in cursor.fetchall():
                states[(record_id, object_type, source, target_id)] = state
                logger.info(
                    "job state",
                    extra={"record_id": record_id, "object_type": object_type, "target_id": target_id,
                           "state": state, "version": version},
                )  # fmt: skip
    return states


def _answer(event: SyncEvent, route: Route, states: dict[JobKey, str]) -> dict[str, Any]:
    query = urlencode({"object_type": event.object_type, "source": event.source})
    return {
        "event_id": str(event.id),
        "record_id": event.record_id,
        "object_type": event.object_type,
        "source": event.source,
        "operation": event.operation,
        "jobs": [
            {"target": t.name, "state": states[(event.record_id, event.object_type, event.source, t.pk)]}
            for t in route.targets
        ],
        "routing": route.decision,
        "status_url": f"/v1/sync/status/{quote(event.record_id, safe='')}?{query}",
    }


def job_finish(*, job_id: int, version: int, succeeded: bool, error_code: str = "", error_message: str = "",
               permanent: bool | None = None) -> str:  # fmt: skip
    """Mark an in-flight job done, but only for the version the worker claimed.

    If an event arrived while the job was in flight, its version moved on: the job goes back
    to pending so the newer state is sent, instead of being marked synced and lost.
    """
    now = timezone.now()
    done_state = JobState.SYNCED if succeeded else (JobState.FAILED if permanent else JobState.RETRYING)
    finished = SyncJob.objects.filter(id=job_id, version=version, state=JobState.IN_FLIGHT).update(
        state=done_state,
        lease_expires_at=None,
        updated_at=now,
        synced_at=now if succeeded else None,
        last_error_code=error_code,
        last_error_message=error_message,
        last_error_permanent=permanent,
    )
    if finished:
        logger.info("job state", extra={"job_id": job_id, "state": done_state, "version": version})
        return done_state
    SyncJob.objects.filter(id=job_id, state=JobState.IN_FLIGHT).update(
        state=JobState.PENDING, lease_expires_at=None, updated_at=now
    )
    logger.info("job state", extra={"job_id": job_id, "state": JobState.PENDING, "reason": "newer version arrived"})
    return JobState.PENDING
