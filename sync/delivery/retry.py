"""Manual retry: failed (or waiting) jobs go back to pending, once, and are nudged."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.exceptions import NotFound

from recordsync.errors import Conflict
from sync import transitions
from sync.delivery import dispatch
from sync.models import JobState, SyncEvent, SyncJob

logger = logging.getLogger("recordsync.sync")


def job_retry(
    *,
    record_id: str,
    target: str | None = None,
    object_type: str | None = None,
    source: str | None = None,
    actor: str,
) -> list[SyncJob]:
    """Re-queue one record's failed and retrying jobs. 404: unknown record; 409: ambiguous or nothing to retry."""
    scope = {
        "record_id": record_id,
        **({"object_type": object_type} if object_type else {}),
        **({"source": source} if source else {}),
    }
    if not SyncEvent.objects.filter(**scope).exists():
        raise NotFound(f"No event was ever accepted for record '{record_id}' with these filters.")
    jobs = SyncJob.objects.filter(**scope)
    if target:
        jobs = jobs.filter(target__name=target)
    kinds = set(jobs.values_list("object_type", "source").distinct())
    if len(kinds) > 1:
        listed = ", ".join(f"{o} from {s}" for o, s in sorted(kinds))
        raise Conflict(f"Record '{record_id}' exists as {listed}: add object_type and source.", code="ambiguous_record")
    retried = jobs_retry(jobs=jobs, actor=actor)
    if not retried:
        raise Conflict(
            "Nothing to retry: no job of this record is failed or waiting to retry.", code="nothing_to_retry"
        )
    return retried


def jobs_retry(*, jobs: QuerySet[SyncJob], actor: str, now: datetime | None = None) -> list[SyncJob]:
    """The state change itself, conditional on the state, so a second call retries nothing twice."""
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(jobs.filter(state__in=transitions.RETRYABLE).values_list("id", flat=True))
        changed = transitions.retry(SyncJob.objects.filter(id__in=ids), now=now)
        retried = list(SyncJob.objects.filter(id__in=ids, state=JobState.PENDING).select_related("target"))
        targets = sorted({job.target_id for job in retried})
        transaction.on_commit(lambda: dispatch.nudge(targets))
    logger.info("jobs retried", extra={"count": changed, "actor": actor})
    return retried


def retry_candidates(
    *, target: str | None, object_type: str | None, error_code: str | None, since: datetime | None
) -> QuerySet[SyncJob]:
    jobs = SyncJob.objects.filter(state__in=transitions.RETRYABLE)
    if target:
        jobs = jobs.filter(target__name=target)
    if object_type:
        jobs = jobs.filter(object_type=object_type)
    if error_code:
        jobs = jobs.filter(last_error_code=error_code)
    if since:
        jobs = jobs.filter(updated_at__gte=since)
    return jobs.order_by("id")


def chunked_ids(jobs: QuerySet[SyncJob], size: int) -> Iterable[list[int]]:
    ids = list(jobs.values_list("id", flat=True))
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
