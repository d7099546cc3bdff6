"""django-q2 tasks. Each takes ids only and states its retry policy.

django-q2 runs with max_attempts=1: a task is a nudge, never retried by the broker; the
job rows hold the state and the periodic sweep re-nudges anything still pending.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone
from django_q.tasks import async_task

from crms.models import Connection
from sync import dispatch, engine
from sync.models import JobState, SyncJob

logger = logging.getLogger("recordsync.tasks")

# A pending job older than this gets a fresh nudge from the sweep.
SWEEP_AGE = timedelta(seconds=30)


def dispatch_tick(connection_id: int) -> int:
    """Queue the batches of one connection that are ready (full, or old enough); returns how many.

    Retry policy: none. A lost tick changes nothing: the dispatcher loop (manage.py sync_dispatch)
    and the sweep look again, and jobs claimed for a batch whose task is lost go back to pending
    when their lease expires.
    """
    connection = Connection.objects.filter(pk=connection_id, enabled=True).first()
    if connection is None:
        return 0
    batches = engine.batches_claim(connection=connection, now=timezone.now())
    for job_ids in batches:
        async_task("sync.tasks.batch_send", job_ids, task_name=f"batch-{connection_id}")
    logger.info("dispatch tick", extra={"target_id": connection_id, "batches": len(batches)})
    return len(batches)


def batch_send(job_ids: list[int]) -> dict[str, int]:
    """Send one claimed batch through its connector.

    Retry policy: none from django-q2 (max_attempts=1). Each job's own retries are rows:
    a transient error sets `retrying` with a backed-off next attempt, which the dispatcher
    picks up; a permanent one, or the last allowed attempt, sets `failed`.
    """
    return engine.batch_run(job_ids=job_ids)


def sweep() -> int:
    """Re-nudge every connection that has pending jobs older than SWEEP_AGE (scheduled each minute).

    Retry policy: none; it runs again on the next schedule.
    """
    cutoff = timezone.now() - SWEEP_AGE
    targets = (
        SyncJob.objects.filter(state=JobState.PENDING, updated_at__lt=cutoff)
        .values_list("target_id", flat=True)
        .distinct()
    )
    return dispatch.nudge(sorted(targets))
