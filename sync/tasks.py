"""django-q2 tasks. Each takes ids only and states its retry policy.

django-q2 runs with max_attempts=1: a task is a nudge, never retried by the broker; the
job rows hold the state and the periodic sweep re-nudges anything still pending.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from sync import dispatch
from sync.models import JobState, SyncJob

logger = logging.getLogger("recordsync.tasks")

# A pending job older than this gets a fresh nudge from the sweep.
SWEEP_AGE = timedelta(seconds=30)


def dispatch_tick(connection_id: int) -> int:
    """Look at one connection's pending work; returns how many jobs are waiting.

    Retry policy: none (a lost tick is replaced by the sweep). Sending lands with the
    sync engine (issue 6); until then jobs honestly stay pending and this only reports them.
    """
    waiting = SyncJob.objects.filter(target_id=connection_id, state=JobState.PENDING).count()
    logger.info("dispatch tick", extra={"target_id": connection_id, "pending": waiting})
    return waiting


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
