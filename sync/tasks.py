"""django-q2 tasks. Each takes ids only and states its retry policy.

This is the only module named in the queue and in schedules (`sync.tasks.<name>`): the layers
below it may move without touching a stored task or a schedule row (docs/architecture.md).

django-q2 runs with max_attempts=1: a task is a nudge, never retried by the broker; the
job rows hold the state and the periodic sweep re-nudges anything still pending.
"""

from __future__ import annotations

import logging
import signal
from datetime import timedelta
from types import FrameType
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task

from crms.models import Connection
from sync.delivery import dispatch, engine, holds, leases
from sync.inbound import changes as inbound
from sync.inbound import reconcile
from sync.models import InboundCursor, JobState, Lane, RecordRead, SyncJob
from sync.ops import alerts, retention, stats

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
    queued = 0
    for job_ids in batches:
        try:
            async_task("sync.tasks.batch_send", job_ids, task_name=f"batch-{connection_id}")
        except Exception as exc:  # the broker is down: the batch goes back to pending, not to a lease wait
            leases.batch_release(job_ids)
            logger.warning(
                "broker unavailable; batch released",
                extra={"target_id": connection_id, "jobs": len(job_ids), "error": repr(exc)},
            )
            continue
        queued += 1
    logger.info("dispatch tick", extra={"target_id": connection_id, "batches": queued})
    return queued


def batch_send(job_ids: list[int]) -> dict[str, int]:
    """Send one claimed batch through its connector.

    Retry policy: none from django-q2 (max_attempts=1). Each job's own retries are rows:
    a transient error sets `retrying` with a backed-off next attempt, which the dispatcher
    picks up; a permanent one, or the last allowed attempt, sets `failed`.
    """
    return engine.batch_run(job_ids=job_ids)


def batch_taken(sender: object = None, func: Any = None, task: dict[str, Any] | None = None, **kwargs: object) -> None:
    """In each worker (django-q2's pre_execute), as a batch_send task starts: its jobs' claims name this
    worker, so a kill before it starts them frees them at once (leases.leases_reap)."""
    if func is batch_send and task and task.get("args"):
        leases.batch_taken(job_ids=task["args"][0])


def worker_stop_handler_install(sender: object = None, **kwargs: object) -> None:
    """In each django-q2 worker (post_spawn): SIGTERM raises SystemExit instead of killing outright.

    django-q2 leaves its workers on the default SIGTERM action, so a signal sent to the whole
    process group (systemd, some container runtimes) would kill a worker mid-batch and strand
    its jobs until the lease ran out. Raised as SystemExit, it lets batch_run hand them back.
    """
    signal.signal(signal.SIGTERM, _raise_system_exit)


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def polls_dispatch() -> int:
    """Queue a poll task for every (connection, object) whose poll is due; returns how many.

    Retry policy: none. A lost poll task leaves its cursor claimed until the lease runs out
    (sync.inbound.changes.POLL_LEASE); the next pass after that queues it again.
    """
    queued = 0
    for connection_id, object_type, owner in inbound.polls_claim(now=timezone.now()):
        try:
            async_task(
                "sync.tasks.poll_objects",
                connection_id,
                object_type,
                owner,
                task_name=f"poll-{connection_id}-{object_type}",
            )
        except Exception as exc:  # the broker is down: give the claim back, look again next pass
            InboundCursor.objects.filter(
                connection_id=connection_id, object_type=object_type, lease_owner=owner
            ).update(lease_owner="", lease_until=None)
            logger.warning(
                "broker unavailable; poll not queued", extra={"target_id": connection_id, "error": repr(exc)}
            )
            continue
        queued += 1
    return queued


def poll_objects(connection_id: int, object_type: str, owner: str) -> dict[str, int]:
    """Poll one object of one connection from its cursor (sync.inbound.changes.poll).

    Retry policy: none; the cursor is saved after every page, so the next due poll resumes.
    """
    connection = Connection.objects.filter(pk=connection_id, enabled=True).first()
    if connection is None:
        return {}
    result = inbound.poll(
        connection=connection,
        object_type=object_type,
        connector=engine.throttled_connector(connection, lane=Lane.READ),
        owner=owner,
    )
    return {"pages": result.pages, **result.counts}


def probes_dispatch() -> int:
    """Queue one probe task for each held quota owner whose probe is due (sync.delivery.holds); returns how many.

    Driven by the dispatcher's pass, about once a second, rather than by a django-q2 schedule: a schedule
    runs at most once a minute, while each owner's probe falls due at its own moment (a minute after the
    limit, then at a doubling interval), and a minute late on every probe would undo the point of probing.
    The pass already claims polls the same way; the call itself runs on a worker, like a poll, so a slow
    target never stalls the dispatcher.

    Retry policy: none. A lost probe task leaves its claim until it runs out (sync.delivery.holds.PROBE_LEASE);
    the next pass after that claims the probe again.
    """
    queued = 0
    for hold_id, owner in holds.probes_claim(now=timezone.now()):
        try:
            async_task("sync.tasks.hold_probe", hold_id, owner, task_name=f"probe-{hold_id}")
        except Exception as exc:  # the broker is down: give the claim back, look again next pass
            holds.probe_release(hold_id=hold_id, owner=owner)
            logger.warning("broker unavailable; probe not queued", extra={"hold_id": hold_id, "error": repr(exc)})
            continue
        queued += 1
    return queued


def hold_probe(hold_id: int, owner: str) -> str:
    """Make the one probe call of a held quota owner (sync.delivery.holds.hold_probe): "lifted", "held" or "gone".

    Retry policy: none from django-q2; a failed probe schedules the next one itself, at twice the interval.
    """
    return holds.hold_probe(hold_id=hold_id, owner=owner)


def record_read(event_id: str) -> dict[str, str]:
    """Carry out one read event (sync.inbound.changes.read_run): read each linked system, capture what it holds.

    Retry policy: none from django-q2; a read not done (its RecordRead rows unread) is queued
    again by the sweep, and running it twice reads nothing twice.
    """
    return inbound.read_run(event_id=event_id)


def sweep() -> int:
    """Re-nudge every connection that has pending jobs older than SWEEP_AGE, and re-queue reads
    still waiting after it (scheduled each minute).

    Retry policy: none; it runs again on the next schedule.
    """
    cutoff = timezone.now() - SWEEP_AGE
    targets = (
        SyncJob.objects.filter(state=JobState.PENDING, updated_at__lt=cutoff)
        .values_list("target_id", flat=True)
        .distinct()
    )
    waiting = RecordRead.objects.filter(read_at__isnull=True, event__received_at__lt=cutoff)
    dispatch.reads_queue(sorted({str(e) for e in waiting.values_list("event_id", flat=True)}))
    return dispatch.nudge(sorted(targets))


def reconcile_all() -> dict[str, dict[str, int]]:
    """The daily schedule "sync-reconcile" (migrations sync/0010, sync/0022): sync.inbound.reconcile.reconcile_all.

    Retry policy: none from django-q2 (max_attempts=1): a failed run is kept as a row with its error,
    and tomorrow's run looks again.
    """
    return reconcile.reconcile_all()


def prune_scheduled() -> dict[str, int]:
    """Prune with SYNC_RETENTION_DAYS; the daily schedule "sync-prune" (migrations sync/0013, sync/0022).

    Retry policy: none from django-q2 (max_attempts=1), and none needed: every batch commits on its
    own, so a run cut short loses nothing and the next one carries on. A run that uses up its share
    of the task timeout queues itself again at once, so a large backlog does not wait a day per slice.
    """
    budget = float(settings.Q_CLUSTER.get("timeout") or 60) * retention.SCHEDULED_SHARE_OF_TIMEOUT
    result = retention.prune_run(
        now=timezone.now(),
        older_than_days=retention.retention_days(),
        dry_run=False,
        batch_size=retention.BATCH_SIZE,
        budget_seconds=budget,
    )
    if not result.finished:
        async_task("sync.tasks.prune_scheduled", task_name="sync-prune-continued")
    return result.counts


def job_counts_refresh() -> int:
    """The "sync-job-counts" schedule (every minute; migration sync/0027): count the finished jobs once for every
    dashboard page and stats read of the next minutes (sync.ops.stats.job_counts). A missed run costs nothing:
    past COUNTS_FRESH_FOR, the reads count them themselves."""
    return stats.job_counts_refresh()


def attempt_minutes_refresh() -> int:
    """The "sync-attempt-minutes" schedule (every minute; migration sync/0030): count each finished minute's
    attempts once for the dashboard's throughput charts (sync.ops.stats.throughput). A missed run costs nothing:
    the minutes not counted yet are counted by the reads themselves."""
    return stats.attempt_minutes_refresh()


def alerts_scheduled() -> dict[str, int]:
    """The "sync-alerts" schedule (every minute; migrations sync/0014, sync/0022): sync.ops.alerts.alerts_check.

    Retry policy: none from django-q2 (max_attempts=1). Nothing is lost by a missed run: measures are
    taken afresh, and unsent openings and resolves stay unsent in their rows until a later run sends them.
    """
    return alerts.alerts_check()
