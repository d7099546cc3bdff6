"""Reads of the sync tables, shaped for the API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import Count, Min, Q, QuerySet

from sync.models import JobState, RecordLink, RecordRead, SyncAttempt, SyncConflict, SyncEvent, SyncJob

HISTORY_LIMIT = 20


def record_status(
    *, record_id: str, object_type: str | None = None, source: str | None = None
) -> dict[str, Any] | None:
    """Where a record stands in every target, or None when no event for it was ever accepted."""
    scope: dict[str, str] = {"record_id": record_id}
    if object_type:
        scope["object_type"] = object_type
    if source:
        scope["source"] = source
    events = list(SyncEvent.objects.filter(**scope).order_by("-received_at")[:HISTORY_LIMIT])
    if not events:
        return None
    jobs = list(
        SyncJob.objects.filter(**scope).select_related("target").order_by("object_type", "source", "target__name")
    )
    link_scope = {k: v for k, v in scope.items() if k != "source"}
    links = {(link.object_type, link.system_id): link.external_id for link in RecordLink.objects.filter(**link_scope)}
    attempts = (
        SyncAttempt.objects.filter(job__in=[j.pk for j in jobs]).select_related("job__target").order_by("-started_at")
    )
    return {
        "record_id": record_id,
        "targets": [_job(job, links.get((job.object_type, job.target_id))) for job in jobs],
        "links": [_link(link) for link in RecordLink.objects.filter(record_id=record_id).select_related("system")],
        "events": [_event(event, superseded=_superseded(event, events)) for event in events],
        "attempts": [_attempt(a) for a in attempts[:HISTORY_LIMIT]],
        "conflicts": [
            _conflict(c)
            for c in SyncConflict.objects.filter(record_id=record_id)
            .select_related("connection")
            .order_by("-detected_at")[:HISTORY_LIMIT]
        ],
        "reads": [
            _read(r)
            for r in RecordRead.objects.filter(event__record_id=record_id)
            .select_related("connection", "event")
            .order_by("-event__received_at")[:HISTORY_LIMIT]
        ],
    }


def _superseded(event: SyncEvent, events: Sequence[SyncEvent]) -> bool:
    """Older than a change of the same record from the same system that had already arrived: never applied."""
    return any(
        other.source == event.source
        and other.object_type == event.object_type
        and other.received_at <= event.received_at
        and other.occurred_at > event.occurred_at
        and other.pk != event.pk
        for other in events
    )


def _link(link: RecordLink) -> dict[str, Any]:
    return {
        "system": link.system.name,
        "external_object": link.external_object,
        "external_id": link.external_id,
        "last_values": link.last_values,
        "synced_at": link.synced_at,
    }


def _conflict(conflict: SyncConflict) -> dict[str, Any]:
    return {
        "id": conflict.pk,
        "connection": conflict.connection.name,
        "state": conflict.state,
        "policy": conflict.policy,
        "fields": conflict.fields,
        "base": conflict.base,
        "system_a_values": conflict.system_a_values,
        "crm_values": conflict.crm_values,
        "resolution": conflict.resolution,
        "resolved_by": conflict.resolved_by,
        "note": conflict.note,
        "detected_at": conflict.detected_at,
        "resolved_at": conflict.resolved_at,
    }


def _read(read: RecordRead) -> dict[str, Any]:
    return {
        "event_id": read.event_id,
        "system": read.connection.name,
        "external_object": read.external_object,
        "external_id": read.external_id,
        "outcome": read.outcome or "waiting",
        "read_at": read.read_at,
        "error": read.error,
    }


def _job(job: SyncJob, external_id: str | None) -> dict[str, Any]:
    error = None
    if job.last_error_code or job.last_error_message:
        error = {"code": job.last_error_code, "message": job.last_error_message, "permanent": job.last_error_permanent}
    return {
        "target": job.target.name,
        "object_type": job.object_type,
        "source": job.source,
        "state": job.state,
        "attempts": job.attempts,
        "version": job.version,
        "last_error": error,
        "external_id": external_id,
        "breaker": _breaker(job),
        "last_event_id": job.last_event_id,
        "next_attempt_at": job.next_attempt_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "synced_at": job.synced_at,
    }


def _breaker(job: SyncJob) -> str:
    breaker = getattr(job.target, "breaker", None)
    return breaker.state if breaker is not None else "closed"


def _event(event: SyncEvent, *, superseded: bool = False) -> dict[str, Any]:
    return {
        "superseded": superseded,
        "event_id": event.id,
        "operation": event.operation,
        "object_type": event.object_type,
        "source": event.source,
        "occurred_at": event.occurred_at,
        "received_at": event.received_at,
        "request_id": event.request_id,
        "routing": event.routing,
    }


def _attempt(attempt: SyncAttempt) -> dict[str, Any]:
    return {
        "target": attempt.job.target.name,
        "version": attempt.version,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "outcome": attempt.outcome,
        "http_status": attempt.http_status,
        "error_code": attempt.error_code,
        "error_message": attempt.error_message,
        "duration_ms": attempt.duration_ms,
    }


def queue_lag(now: datetime) -> tuple[float, int]:
    """How long the oldest job that is due has waited (seconds), and how many are due."""
    due = SyncJob.objects.filter(state__in=(JobState.PENDING, JobState.RETRYING), target__enabled=True).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    found = due.aggregate(oldest=Min("updated_at"), count=Count("id"))
    oldest = found["oldest"]
    return (max(0.0, (now - oldest).total_seconds()) if oldest else 0.0), int(found["count"] or 0)


def jobs_query(filters: dict[str, Any]) -> QuerySet[SyncJob]:
    """Jobs matching GET /v1/sync/jobs' filters (already validated), with what their rows show."""
    jobs = SyncJob.objects.select_related("target", "target__breaker")
    if filters.get("state"):
        jobs = jobs.filter(state__in=sorted(filters["state"]))
    for name, lookup in (
        ("target", "target__name"),
        ("source", "source"),
        ("object_type", "object_type"),
        ("record_id", "record_id"),
        ("error_code", "last_error_code"),
        ("updated_after", "updated_at__gte"),
        ("updated_before", "updated_at__lt"),
    ):
        if filters.get(name) not in (None, ""):
            jobs = jobs.filter(**{lookup: filters[name]})
    return jobs


def external_ids(jobs: Sequence[SyncJob]) -> dict[tuple[str, int], str]:
    """Each job's record id in its target, by (record id, target id), in one query."""
    rows = RecordLink.objects.filter(
        record_id__in={job.record_id for job in jobs}, system_id__in={job.target_id for job in jobs}
    )
    return {(link.record_id, link.system_id): link.external_id for link in rows}


def job_row(job: SyncJob, external_id: str | None = None) -> dict[str, Any]:
    return {"id": job.pk, "record_id": job.record_id, **_job(job, external_id)}


def event_detail(event_id: Any) -> dict[str, Any] | None:
    """One event, its routing decision, and the jobs it was routed to as they stand now."""
    event = SyncEvent.objects.filter(pk=event_id).first()
    if event is None:
        return None
    targets = list(event.routing.get("targets") or [])
    jobs = SyncJob.objects.filter(
        record_id=event.record_id, object_type=event.object_type, source=event.source, target__name__in=targets
    ).select_related("target", "target__breaker")
    links = {link.system_id: link.external_id for link in RecordLink.objects.filter(record_id=event.record_id)}
    return {
        **_event(event),
        "record_id": event.record_id,
        "payload": event.payload,
        "answer": event.response,
        "jobs": [job_row(job, links.get(job.target_id)) for job in jobs.order_by("target__name")],
    }
