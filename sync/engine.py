"""The sync engine: pending jobs become batches, batches become connector calls, and every
result becomes a job state and an attempt row.

Job rows are the truth and every step is a conditional update, so a task run twice, a worker
killed mid-batch or two dispatchers at once never send a change twice or lose one: a lost
batch's lease expires and its jobs go back to pending; a repeat is an upsert of the same state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from crms.base import ConnectorError, OutboundRecord, PushResult
from crms.build import connector_for
from crms.models import Connection
from crms.registry import UnknownKind, connector_class
from sync import config
from sync.breaker import Gate, breaker_allow, breaker_failure, breaker_release_probe, breaker_success
from sync.models import AttemptOutcome, JobState, RecordLink, SyncAttempt, SyncJob
from sync.throttle import gate_for

logger = logging.getLogger("recordsync.engine")

DUE_STATES = (JobState.PENDING, JobState.RETRYING)


# --- dispatch: pending jobs -> queued batches ---------------------------------------------------


def batch_size_for(connection: Connection) -> int:
    wanted = config.effective(connection.pk).batch_size
    try:
        limit = connector_class(connection.kind).capabilities.batch_size
    except UnknownKind:
        limit = wanted
    return max(1, min(wanted, limit))


def _due(connection_id: int, now: datetime) -> Any:
    return SyncJob.objects.filter(target_id=connection_id, state__in=DUE_STATES).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def batches_claim(*, connection: Connection, now: datetime, force: bool = False) -> list[list[int]]:
    """Claim the batches that are ready: full, or holding a job older than the flush interval.

    Each claim is a conditional update (pending/retrying -> queued) that takes only rows still
    due, so dispatchers on several machines never queue one job twice.
    """
    size = batch_size_for(connection)
    flush_before = now - timedelta(seconds=config.effective(connection.pk).flush_interval)
    batches: list[list[int]] = []
    groups = _due(connection.pk, now).values("object_type").annotate(oldest=Min("updated_at"))
    for group in groups:
        while True:
            ids = list(
                _due(connection.pk, now).filter(object_type=group["object_type"]).order_by("updated_at", "id")
                .values_list("id", flat=True)[:size]
            )  # fmt: skip
            ready = len(ids) >= size or force or group["oldest"] <= flush_before
            if not ids or not ready:
                break
            lease = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
            owner = uuid.uuid4().hex
            claimed = (
                _due(connection.pk, now)
                .filter(id__in=ids)
                .update(state=JobState.QUEUED, lease_expires_at=lease, lease_owner=owner, updated_at=now)
            )
            if claimed:
                batches.append(list(SyncJob.objects.filter(lease_owner=owner).values_list("id", flat=True)))
            if len(ids) < size:
                break
    return batches


def leases_expire(*, now: datetime) -> int:
    """Queued or in-flight jobs whose lease ran out (a killed worker, a lost task) go back to pending."""
    return SyncJob.objects.filter(state__in=(JobState.QUEUED, JobState.IN_FLIGHT), lease_expires_at__lt=now).update(
        state=JobState.PENDING, lease_expires_at=None, lease_owner="", updated_at=now
    )


# --- running a batch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    job: SyncJob
    record: OutboundRecord | None  # None: nothing to send (skipped, or refused before the call)
    refused: ConnectorError | None = None
    skip: tuple[str, str] = ("unchanged", "the target already holds this state")


def batch_run(*, job_ids: Sequence[int], now: datetime | None = None) -> dict[str, int]:
    """Send one claimed batch through its connector; write an attempt and a state for every job."""
    now = now or timezone.now()
    owner = uuid.uuid4().hex
    lease = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    taken = SyncJob.objects.filter(id__in=job_ids, state=JobState.QUEUED).update(
        state=JobState.IN_FLIGHT, lease_owner=owner, lease_expires_at=lease, updated_at=now
    )
    if not taken:
        return {"claimed": 0}
    jobs = list(
        SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT).select_related("target", "last_event")
    )
    connection = jobs[0].target
    links = _links(jobs)
    work = [_prepare(job, links.get((job.object_type, job.record_id))) for job in jobs]
    counts: dict[str, int] = defaultdict(int)
    for item in work:
        if item.refused is not None:
            counts[_refuse(item.job, item.refused, now)] += 1
        elif item.record is None:
            counts[_skip(item.job, item.skip, now)] += 1
    to_send = [item for item in work if item.record is not None]
    if to_send:
        for state in _send(connection, to_send, now):
            counts[state] += 1
    return {"claimed": taken, **counts}


def _links(jobs: Sequence[SyncJob]) -> dict[tuple[str, str], RecordLink]:
    target = jobs[0].target_id
    keys = {(job.object_type, job.record_id) for job in jobs}
    found = RecordLink.objects.filter(system_id=target, record_id__in={k[1] for k in keys})
    return {(link.object_type, link.record_id): link for link in found if (link.object_type, link.record_id) in keys}


def _prepare(job: SyncJob, link: RecordLink | None) -> Claimed:
    event = job.last_event
    spec = (event.routing.get("payloads") or {}).get(job.target.name) if event else None
    target_object = (spec or {}).get("object") or job.object_type
    external_id = link.external_id if link else None
    if event is None:  # never guess: a missing event must not turn into a delete
        return Claimed(job, None, ConnectorError("the event behind this job is gone; post the record again",
                                                 code="EVENT_MISSING", permanent=True))  # fmt: skip
    if event.operation == "delete":
        if (spec or {}).get("delete") == "soft_delete" and spec:
            marker = {spec["soft_delete_field"]: True}
            return Claimed(job, OutboundRecord(job.record_id, target_object, "upsert", marker, external_id))
        if link is None:  # created and deleted before it was ever sent, or never synced: nothing to undo
            return Claimed(job, None, skip=("never_synced", "the target never received this record"))
        return Claimed(job, OutboundRecord(job.record_id, target_object, "delete", {}, external_id))
    fields = (spec or {}).get("fields") if spec else event.payload
    fields = dict(fields or {})
    if link is not None and link.last_hash == payload_hash(fields):
        return Claimed(job, None)
    missing = [] if link is not None else _missing_required(job.target, target_object, fields)
    if missing:
        return Claimed(job, None, ConnectorError(
            f"{', '.join(missing)} required to create a {target_object} in {job.target.name}; nothing was sent",
            code="REQUIRED_FIELD_MISSING", permanent=True, fields=missing))  # fmt: skip
    return Claimed(job, OutboundRecord(job.record_id, target_object, "upsert", fields, external_id))


def _missing_required(connection: Connection, object_type: str, fields: dict[str, Any]) -> list[str]:
    """Checked against the connector's schema before any call: a record that cannot be valid
    fails at once, permanently, and costs no quota."""
    try:
        objects = connector_class(connection.kind).capabilities.objects
    except UnknownKind:
        return []
    required = (objects.get(object_type) or {}).get("required") or []
    return [name for name in required if fields.get(name) in (None, "", [])]


def payload_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _skip(job: SyncJob, why: tuple[str, str], now: datetime) -> str:
    SyncAttempt.objects.create(job=job, version=job.version, started_at=now, finished_at=now,
                               outcome=AttemptOutcome.SKIPPED, error_code=why[0], error_message=why[1])  # fmt: skip
    return _finish(job, JobState.SKIPPED, now, error=None)


def _refuse(job: SyncJob, error: ConnectorError, now: datetime) -> str:
    SyncAttempt.objects.create(job=job, version=job.version, started_at=now, finished_at=now,
                               outcome=AttemptOutcome.ERROR, error_code=error.code, error_message=error.message,
                               permanent=True)  # fmt: skip
    return _finish(job, JobState.FAILED, now, error=error)


def _send(connection: Connection, items: list[Claimed], now: datetime) -> list[str]:
    gate, look_again = breaker_allow(connection, now)
    if gate is Gate.WAIT:  # the breaker is open: no call, the jobs wait without spending an attempt
        error = ConnectorError("circuit breaker open: the connection is failing", code="BREAKER_OPEN",
                               retry_after=(look_again - now).total_seconds() if look_again else None)  # fmt: skip
        return [_finish(item.job, JobState.RETRYING, now, error=error, counts=False) for item in items]
    records = [item.record for item in items if item.record is not None]
    started = timezone.now()
    call_error: ConnectorError | None = None
    try:
        results = connector_for(connection, gate=_gate(connection)).push(records)
    except ConnectorError as exc:
        call_error = exc
    except Exception as exc:  # a bug or a broken config must not leave the batch in flight
        logger.exception("connector failed", extra={"connection": connection.name})
        call_error = ConnectorError(f"{type(exc).__name__}: {exc}", code="connector_exception")
    if call_error is not None:
        results = [PushResult(r.record_id, "error", external_id=r.external_id, error=call_error) for r in records]
    _breaker_report(connection, call_error, now, probe=gate is Gate.PROBE)
    duration = int((timezone.now() - started).total_seconds() * 1000)
    return [_record_result(item, result, now, duration) for item, result in zip(items, results, strict=True)]


def _breaker_report(connection: Connection, error: ConnectorError | None, now: datetime, *, probe: bool) -> None:
    """Only the connection's health moves the breaker: a record refused for its data does not."""
    if error is None:
        breaker_success(connection)
    elif error.code == "THROTTLED":
        if probe:
            breaker_release_probe(connection)
    elif not error.permanent or error.pause_connection or error.http_status in (401, 403):
        breaker_failure(connection, reason=f"{error.code}: {error.message}", now=now, probe=probe,
                        at_once=error.pause_connection)  # fmt: skip
    elif probe:
        breaker_success(connection)  # it answered: the connection works, the request was wrong


def _gate(connection: Connection) -> Callable[[], None] | None:
    settings_now = config.effective(connection.pk)
    if not settings_now.rate_limit_calls:
        return None
    return gate_for(connection, limit=settings_now.rate_limit_calls, window=settings_now.rate_limit_window)


def _record_result(item: Claimed, result: PushResult, now: datetime, duration_ms: int) -> str:
    job, error = item.job, result.error
    SyncAttempt.objects.create(
        job=job, version=job.version, started_at=now, finished_at=timezone.now(),
        outcome=AttemptOutcome.ERROR if error else AttemptOutcome.SUCCESS,
        http_status=error.http_status if error else None, error_code=error.code if error else "",
        error_message=error.message if error else "", permanent=error.permanent if error else None,
        duration_ms=duration_ms,
    )  # fmt: skip
    if error is None:
        if item.record is not None and result.external_id:
            _link(job, item.record, result.external_id, now)
        return _finish(job, JobState.SYNCED, now, error=None)
    if error.code in ("THROTTLED", "BREAKER_OPEN"):  # not the records' fault: handed back, not counted
        return _finish(job, JobState.RETRYING, now, error=error, counts=False)
    exhausted = job.attempts + 1 >= config.effective(job.target_id).max_attempts
    state = JobState.FAILED if error.permanent or exhausted else JobState.RETRYING
    return _finish(job, state, now, error=error)


def _link(job: SyncJob, record: OutboundRecord, external_id: str, now: datetime) -> None:
    if record.operation == "delete":
        return
    RecordLink.objects.update_or_create(
        object_type=job.object_type, record_id=job.record_id, system_id=job.target_id,
        defaults={"external_object": record.object_type, "external_id": external_id, "last_values": record.fields,
                  "last_hash": payload_hash(record.fields), "synced_at": now},
    )  # fmt: skip


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter (AWS's), never sooner than the target asked."""
    ceiling = min(settings.SYNC_BACKOFF_CAP_SECONDS, settings.SYNC_BACKOFF_BASE_SECONDS * 2**attempt)
    return max(random.uniform(0, ceiling), retry_after or 0)  # noqa: S311 - jitter, not a secret


def _finish(job: SyncJob, state: str, now: datetime, *, error: ConnectorError | None, counts: bool = True) -> str:
    """Conditional on the version claimed: an event that arrived meanwhile sends the job back to pending."""
    wait = (backoff_seconds(job.attempts, error.retry_after) if counts else error.retry_after or 1) if error else 0
    retry_at = now + timedelta(seconds=wait) if state == JobState.RETRYING and error else None
    attempts = 0 if state in (JobState.SYNCED, JobState.SKIPPED) else job.attempts + (1 if counts else 0)
    with transaction.atomic():
        done = SyncJob.objects.filter(id=job.id, version=job.version, state=JobState.IN_FLIGHT).update(
            state=state, attempts=attempts, next_attempt_at=retry_at, lease_expires_at=None, lease_owner="",
            updated_at=timezone.now(), synced_at=now if state == JobState.SYNCED else job.synced_at,
            last_error_code=error.code if error else "", last_error_message=error.message if error else "",
            last_error_permanent=error.permanent if error else None,
        )  # fmt: skip
        if not done:
            SyncJob.objects.filter(id=job.id, state=JobState.IN_FLIGHT).update(
                state=JobState.PENDING, lease_expires_at=None, lease_owner="", updated_at=timezone.now()
            )
            state = JobState.PENDING
    logger.info("job state", extra={"job_id": job.id, "record_id": job.record_id, "target_id": job.target_id,
                                    "state": state, "version": job.version})  # fmt: skip
    return state
