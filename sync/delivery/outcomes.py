"""What became of each job of a batch, written in one transaction: links, attempts and job states.

Every finish is conditional on the version a job was claimed at and on the lease still held, so a newer
event that arrived meanwhile sends the job back to pending instead of being lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from crms.base import ConnectorError, OutboundRecord
from crms.models import Connection
from recordsync.metrics import RETRIES
from sync import transitions
from sync.contracts import SYSTEM_A
from sync.delivery.throttle import recheck_seconds
from sync.models import AttemptOutcome, JobState, RecordLink, SyncAttempt, SyncJob

# The engine's logger: operators filter on it, and a batch's lines stay under one name.
logger = logging.getLogger("recordsync.engine")


def payload_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Outcome:
    """What became of one job in a batch, before it is written."""

    job: SyncJob
    state: str
    error: ConnectorError | None
    counts: bool = True  # spends one of the job's attempts
    attempt: str | None = None  # the attempt row's outcome; None writes no attempt (the breaker was open)
    skip: tuple[str, str] | None = None
    duration_ms: int | None = None
    sent: OutboundRecord | None = None  # an upsert the target accepted: its link is written
    external_id: str = ""
    link_object_type: str = ""  # the object type the record's link is kept under (the job's, unless linked)


def outcomes_save(outcomes: Sequence[Outcome], *, owner: str, now: datetime) -> list[str]:
    """Links, attempts and job states of one batch, in one transaction; returns each job's final state.

    A job's finish is conditional on the version it was claimed at and on still holding its lease:
    an event that arrived meanwhile sends the job back to pending (the newer state goes out next),
    and a job whose lease ran out and was taken by another worker is left to that worker.
    """
    finished = timezone.now()
    with transaction.atomic():
        _links_save([o for o in outcomes if o.sent is not None and o.external_id], now)
        SyncAttempt.objects.bulk_create([_attempt_row(o, now, finished) for o in outcomes if o.attempt])
        held = dict(
            SyncJob.objects.select_for_update()
            .filter(id__in=[o.job.id for o in outcomes], state=JobState.IN_FLIGHT, lease_owner=owner)
            .values_list("id", "version")
        )
        current = [o for o in outcomes if held.get(o.job.id) == o.job.version]
        superseded = [o.job.id for o in outcomes if o.job.id in held and held[o.job.id] != o.job.version]
        _states_save(current, now, finished)
        _bases_save([o for o in current if o.state == JobState.SYNCED], now)
        if superseded:
            transitions.to_pending(SyncJob.objects.filter(id__in=superseded), now=finished)
    final = {o.job.id: o.state for o in current} | dict.fromkeys(superseded, JobState.PENDING)
    states = [final.get(o.job.id, "lost_lease") for o in outcomes]
    for outcome, state in zip(outcomes, states, strict=True):
        if state == JobState.RETRYING and outcome.counts and outcome.error is not None:
            RETRIES.labels(outcome.job.target.name, outcome.error.code).inc()
        event = outcome.job.last_event
        logger.info(
            "job state",
            extra={
                "job_id": outcome.job.id,
                "record_id": outcome.job.record_id,
                "target_id": outcome.job.target_id,
                "state": state,
                "version": outcome.job.version,
                "request_id": event.request_id if event else None,
            },
        )
    return states


def _bases_save(outcomes: Sequence[Outcome], now: datetime) -> None:
    """A change from a CRM that reached its target is now what both sides agree on: it becomes that CRM
    link's last-synced values, the base the next conflict is judged against and echoes are compared with."""
    changes = [
        o.job
        for o in outcomes
        if o.job.source != SYSTEM_A
        and o.job.last_event is not None
        and o.job.last_event.operation in ("create", "update")
    ]
    if not changes:
        return
    systems = dict(Connection.objects.filter(name__in={job.source for job in changes}).values_list("name", "id"))
    for job in changes:
        assert job.last_event is not None  # noqa: S101 - filtered above
        values = {k: v for k, v in (job.last_event.payload or {}).items() if v not in (None, "")}
        RecordLink.objects.filter(
            record_id=job.record_id, system_id=systems.get(job.source), external_object=job.object_type
        ).update(last_values=values, last_hash=payload_hash(values), synced_at=now)


def _attempt_row(outcome: Outcome, started: datetime, finished: datetime) -> SyncAttempt:
    error = outcome.error
    code, message = outcome.skip or ((error.code, error.message) if error else ("", ""))
    return SyncAttempt(
        job=outcome.job,
        version=outcome.job.version,
        started_at=started,
        finished_at=finished,
        outcome=outcome.attempt or "",
        http_status=error.http_status if error else None,
        error_code=code,
        error_message=message,
        permanent=error.permanent if error else None,
        duration_ms=outcome.duration_ms,
    )


def _states_save(outcomes: Sequence[Outcome], now: datetime, finished: datetime) -> None:
    """One UPDATE for the synced jobs and one for the skipped (they share their values); one per
    job that failed or retries (each has its own backoff)."""
    synced = [o.job.id for o in outcomes if o.state == JobState.SYNCED]
    skipped = [o.job.id for o in outcomes if o.state == JobState.SKIPPED]
    if synced:
        transitions.finish_synced(SyncJob.objects.filter(id__in=synced), now=now, finished=finished)
    if skipped:
        transitions.finish_skipped(SyncJob.objects.filter(id__in=skipped), finished=finished)
    for outcome in outcomes:
        if outcome.state in (JobState.SYNCED, JobState.SKIPPED):
            continue
        job, error = outcome.job, outcome.error
        wait = retry_wait(error, job.attempts, counts=outcome.counts) if error is not None else 0.0
        transitions.finish_unsent(
            SyncJob.objects.filter(id=job.id),
            state=outcome.state,
            attempts=job.attempts + (1 if outcome.counts else 0),
            next_attempt_at=now + timedelta(seconds=wait) if outcome.state == JobState.RETRYING else None,
            error=(error.code, error.message, error.permanent) if error else ("", "", None),
            finished=finished,
        )


def _links_save(outcomes: Sequence[Outcome], now: datetime) -> None:
    """Upsert the link of every record the target accepted, in one statement.

    If one link collides with another record's (two System A records matched to one CRM record,
    e.g. a CRM record found by email), the rest are still written and that job fails
    with the reason instead of the whole batch.
    """
    rows = [_link_row(o, now) for o in outcomes]
    if not rows:
        return
    try:
        with transaction.atomic():
            _links_upsert(rows)
        return
    except IntegrityError:
        pass
    for outcome, row in zip(outcomes, rows, strict=True):
        try:
            with transaction.atomic():
                _links_upsert([row])
        except IntegrityError:
            outcome.state, outcome.attempt, outcome.sent = JobState.FAILED, AttemptOutcome.ERROR, None
            outcome.error = ConnectorError(
                f"{row.external_object} {row.external_id} is already linked to another record; "
                "the target was written but this record is not linked to it",
                code="LINK_CONFLICT",
                permanent=True,
            )


def _link_row(outcome: Outcome, now: datetime) -> RecordLink:
    record = outcome.sent
    assert record is not None  # noqa: S101 - callers pass only sent records
    return RecordLink(
        object_type=outcome.link_object_type or outcome.job.object_type,
        record_id=outcome.job.record_id,
        system_id=outcome.job.target_id,
        external_object=record.object_type,
        external_id=outcome.external_id,
        last_values=record.fields,
        last_hash=payload_hash(record.fields),
        synced_at=now,
    )


def _links_upsert(rows: Sequence[RecordLink]) -> None:
    RecordLink.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["record_id", "object_type", "system"],
        update_fields=["external_object", "external_id", "last_values", "last_hash", "synced_at"],
    )


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter (AWS's), never sooner than the target asked."""
    ceiling = min(settings.SYNC_BACKOFF_CAP_SECONDS, settings.SYNC_BACKOFF_BASE_SECONDS * 2**attempt)
    return max(random.uniform(0, ceiling), retry_after or 0)  # noqa: S311 - jitter, not a secret


def retry_wait(error: ConnectorError, attempts: int, *, counts: bool) -> float:
    """Seconds until a job that met `error` after `attempts` counted tries is due again.

    Handed back without a call (`counts` False: our throttle, our breaker): the wait the limit states, at
    most `sync.delivery.throttle.recheck_seconds()`. A cap's spread can be hours; looking again while the limit
    stands costs no call, and a limit that ends sooner wakes the jobs itself (a probe, staff, an answer
    showing room).

    A try that counts backs off exponentially (`backoff_seconds`), never sooner than the target asked.
    A server error or a lost connection says nothing about quota, so a longer wait a connector derived
    for it (say, a rate-limit reset read from other headers) is held to the backoff's cap: seconds to
    minutes, never hours.
    """
    if not counts:
        return min(error.retry_after or 1.0, recheck_seconds())
    asked = error.retry_after
    quota = error.pause_connection or error.http_status == 429
    if asked is not None and not quota and (error.http_status is None or error.http_status >= 500):
        asked = min(asked, float(settings.SYNC_BACKOFF_CAP_SECONDS))
    return backoff_seconds(attempts, asked)
