"""Retention: old, finished history is pruned in small batches; the current state of everything is kept.

Run daily by the django-q2 schedule that migration sync/0013 installs, and by `manage.py sync_prune`.
What is kept, and why, is in docs/retention.md. Pruned rows are deleted, not archived: a row is only
pruned once a newer row says the same thing or more (a later event of the record, a later attempt of
the job, a later run of the reconcile), so what is lost is history, never state.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q, QuerySet

from sync.delivery import allowance
from sync.models import (
    Alert,
    AlertState,
    BackfillRun,
    BreakerTransition,
    ConflictState,
    JobState,
    QuotaSample,
    ReconcileRun,
    RecordRead,
    RunState,
    SyncAttempt,
    SyncConflict,
    SyncEvent,
    SyncJob,
    ThrottleCall,
    ThrottleLimit,
)

logger = logging.getLogger("recordsync.sync")

clock: Callable[[], float] = time.monotonic  # swapped in tests to run out of time
BATCH_SIZE = 5000
RETENTION_DAYS_DEFAULT = 30
IDEMPOTENCY_WINDOW_DAYS_DEFAULT = 7
# The throttle counts calls over its window, at most rate_limit_window = 86400 s (docs/api.md).
THROTTLE_KEEP = timedelta(days=1)
# A scheduled run stops at this share of django-q2's task timeout and queues itself again, so the
# worker never kills it mid-batch and a large backlog is worked off over several runs.
SCHEDULED_SHARE_OF_TIMEOUT = 0.75

FINISHED_JOBS = (JobState.SYNCED, JobState.SKIPPED)
FINISHED_RUNS = (RunState.DONE, RunState.FAILED)
STATE_CHANGES = ("create", "update", "delete")
# Which later events of the same record make an event history. A read is a request, not a state:
# it never makes a change history. Only a later delete makes a delete history: it is the record's
# tombstone (sync.ingest.services.deletions refuses resurrection by it) even after System A re-creates it.
SUPERSEDED_BY: dict[str, tuple[str, ...]] = {
    "read": (*STATE_CHANGES, "read"),
    "create": STATE_CHANGES,
    "update": STATE_CHANGES,
    "delete": ("delete",),
}

# Every table a prune deletes from, in the order it reports them (RecordRead: with their events).
LABELS = [
    model._meta.label
    for model in (
        SyncConflict,
        SyncAttempt,
        SyncEvent,
        RecordRead,
        ThrottleCall,
        QuotaSample,
        BreakerTransition,
        Alert,
        ReconcileRun,
        BackfillRun,
    )
]

Progress = Callable[[int], object]


@dataclass(frozen=True)
class Pruned:
    counts: dict[str, int]  # rows per model label ("sync.SyncEvent"), every prunable model listed
    finished: bool  # False: the time budget ran out with rows left


def retention_days() -> int:
    return _days_setting("SYNC_RETENTION_DAYS", RETENTION_DAYS_DEFAULT)


def idempotency_window_days() -> int:
    """How long a repeated Idempotency-Key is guaranteed its first answer: events are kept at least this long."""
    return _days_setting("SYNC_IDEMPOTENCY_WINDOW_DAYS", IDEMPOTENCY_WINDOW_DAYS_DEFAULT)


def _days_setting(name: str, default: int) -> int:
    value = getattr(settings, name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"{name} must be a whole number of days, at least 1; it is {value!r}")
    return value


def prune(
    *,
    now: datetime,
    older_than_days: int,
    dry_run: bool,
    batch_size: int = BATCH_SIZE,
    progress: Progress = lambda n: None,
) -> dict[str, int]:
    """Delete finished rows older than `older_than_days` (count them only, with `dry_run`); the counts per model.

    Each batch of at most `batch_size` rows is its own short transaction, so no table is locked for
    long and a run stopped half-way keeps what it did. Safe to run twice: a second run finds nothing
    left to delete. `progress` hears of the rows each batch deleted.
    """
    return prune_run(
        now=now, older_than_days=older_than_days, dry_run=dry_run, batch_size=batch_size, progress=progress
    ).counts


def prune_run(
    *,
    now: datetime,
    older_than_days: int,
    dry_run: bool,
    batch_size: int = BATCH_SIZE,
    progress: Progress = lambda n: None,
    budget_seconds: float | None = None,
) -> Pruned:
    """`prune`, stopping between batches once `budget_seconds` have passed (then `finished` is False)."""
    if older_than_days < 1:
        raise ValueError(f"older_than_days must be at least 1, not {older_than_days}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    deadline = None if budget_seconds is None else clock() + budget_seconds
    counts = Counter[str](dict.fromkeys(LABELS, 0))
    finished = True
    # Conflicts go before events: an event only a pruned conflict pointed at is pruned with it.
    for rows in prunable(now=now, older_than_days=older_than_days):
        if dry_run:
            counts.update(_count(rows))
            continue
        finished = _delete(rows, batch_size, counts, progress, deadline)
        if not finished:
            break
    result = Pruned(dict(counts), finished)
    logger.info(
        "retention prune",
        extra={"dry_run": dry_run, "older_than_days": older_than_days, "finished": finished, "counts": result.counts},
    )
    return result


# --- what may go ---------------------------------------------------------------------------------


def prunable(*, now: datetime, older_than_days: int) -> list[QuerySet[Any]]:
    """The rows a prune deletes, one queryset per table, in the order they must go."""
    cutoff = now - timedelta(days=older_than_days)
    return [
        _conflicts(cutoff),
        _attempts(cutoff),
        _events(cutoff, now - timedelta(days=idempotency_window_days())),
        _throttle_calls(now),
        _quota_samples(now),
        _breaker_transitions(cutoff),
        _alerts(cutoff),
        _reconcile_runs(cutoff),
        _backfill_runs(cutoff),
    ]


def _conflicts(cutoff: datetime) -> QuerySet[SyncConflict]:
    """Decided long ago. An open conflict holds its jobs: it stays however old it is."""
    return SyncConflict.objects.filter(state=ConflictState.RESOLVED, resolved_at__lt=cutoff)


def _attempts(cutoff: datetime) -> QuerySet[SyncAttempt]:
    """Old tries of jobs that are done (synced or skipped), except each job's latest, which status still shows.

    A failed, held, retrying or waiting job keeps all its attempts: they are how its story is read.
    """
    newer = SyncAttempt.objects.filter(
        Q(started_at__gt=OuterRef("started_at")) | Q(started_at=OuterRef("started_at"), pk__gt=OuterRef("pk")),
        job=OuterRef("job"),
    )
    return SyncAttempt.objects.filter(started_at__lt=cutoff, job__state__in=FINISHED_JOBS).filter(Exists(newer))


def _events(cutoff: datetime, window_start: datetime) -> QuerySet[SyncEvent]:
    """Events that are history: old, outside the idempotency window, superseded, and pointed at by nothing kept.

    Superseded means a later event of the same record (same record id, object type and source) both
    happened and arrived after it, of a kind that replaces it (SUPERSEDED_BY). So each record always
    keeps its latest event, its latest change and its latest delete, whichever order is asked for:
    status, backfill (latest stored state), reconcile (already deleted?) and deletions() still see
    what they saw. A job's last_event is the change a target still has, or last got: a job whose
    event is gone fails with EVENT_MISSING, so it is never pruned, nor an event an open or
    recent conflict shows, nor a read whose result is still awaited.
    """
    kept_conflicts = SyncConflict.objects.filter(
        ~Q(state=ConflictState.RESOLVED) | Q(resolved_at__isnull=True) | Q(resolved_at__gte=cutoff)
    )
    later = SyncEvent.objects.filter(
        record_id=OuterRef("record_id"),
        object_type=OuterRef("object_type"),
        source=OuterRef("source"),
        occurred_at__gt=OuterRef("occurred_at"),
        received_at__gt=OuterRef("received_at"),
    )
    superseded = Q()
    for operation, by in SUPERSEDED_BY.items():
        superseded |= Q(Exists(later.filter(operation__in=by)), operation=operation)
    return (
        SyncEvent.objects.filter(received_at__lt=min(cutoff, window_start))
        .filter(superseded)
        .exclude(Exists(SyncJob.objects.filter(last_event=OuterRef("pk"))))
        .exclude(Exists(kept_conflicts.filter(Q(system_a_event=OuterRef("pk")) | Q(crm_event=OuterRef("pk")))))
        .exclude(Exists(RecordRead.objects.filter(event=OuterRef("pk"), outcome="")))
    )


def _throttle_calls(now: datetime) -> QuerySet[ThrottleCall]:
    """Calls no window counts any more: older than the longest window, or a target's own cap still in force."""
    capped = ThrottleLimit.objects.filter(cap_until__gt=now).aggregate(longest=Max("cap_seconds"))["longest"]
    keep = max(THROTTLE_KEEP, timedelta(seconds=capped or 0))
    return ThrottleCall.objects.filter(at__lt=now - keep)


def _quota_samples(now: datetime) -> QuerySet[QuotaSample]:
    """What targets said of their allowance: the forecast reads the last hour, the dashboard the last two days."""
    return QuotaSample.objects.filter(at__lt=now - allowance.KEEP)


def _breaker_transitions(cutoff: datetime) -> QuerySet[BreakerTransition]:
    """Old changes of state, except each connection's latest: why its breaker is in the state it is."""
    newer = BreakerTransition.objects.filter(
        Q(at__gt=OuterRef("at")) | Q(at=OuterRef("at"), pk__gt=OuterRef("pk")), connection=OuterRef("connection")
    )
    return BreakerTransition.objects.filter(at__lt=cutoff).filter(Exists(newer))


def _alerts(cutoff: datetime) -> QuerySet[Alert]:
    """Incidents resolved long ago; an open one stays however old it is."""
    return Alert.objects.filter(state=AlertState.RESOLVED, resolved_at__lt=cutoff)


def _reconcile_runs(cutoff: datetime) -> QuerySet[ReconcileRun]:
    """Finished runs, except the latest of each connection's object: when it was last reconciled, and how."""
    newer = ReconcileRun.objects.filter(
        Q(started_at__gt=OuterRef("started_at")) | Q(started_at=OuterRef("started_at"), pk__gt=OuterRef("pk")),
        connection=OuterRef("connection"),
        object_type=OuterRef("object_type"),
    )
    return ReconcileRun.objects.filter(state__in=FINISHED_RUNS, finished_at__lt=cutoff).filter(Exists(newer))


def _backfill_runs(cutoff: datetime) -> QuerySet[BackfillRun]:
    """Finished runs that are not the latest of their backfill.

    The latest is what `sync_backfill` resumes (a failed one keeps its checkpoint) or knows is done
    (sync.inbound.backfill.backfill_start looks at no other); a running one is a checkpoint in use.
    """
    newer = BackfillRun.objects.filter(
        Q(started_at__gt=OuterRef("started_at")) | Q(started_at=OuterRef("started_at"), pk__gt=OuterRef("pk")),
        source=OuterRef("source"),
        target=OuterRef("target"),
        object_type=OuterRef("object_type"),
    )
    # `since` is part of a backfill's identity, and NULL never equals NULL in SQL: two cases.
    same_backfill = Q(Exists(newer.filter(since=OuterRef("since"))), since__isnull=False) | Q(
        Exists(newer.filter(since__isnull=True)), since__isnull=True
    )
    return BackfillRun.objects.filter(state__in=FINISHED_RUNS, finished_at__lt=cutoff).filter(same_backfill)


# --- counting and deleting -----------------------------------------------------------------------


def _count(rows: QuerySet[Any]) -> dict[str, int]:
    """What deleting `rows` would delete, cascades included (a pruned event takes its reads with it)."""
    counts = {rows.model._meta.label: rows.count()}
    if rows.model is SyncEvent:
        counts[RecordRead._meta.label] = RecordRead.objects.filter(event__in=rows.values("pk")).count()
    return counts


def _delete(
    rows: QuerySet[Any], batch_size: int, counts: Counter[str], progress: Progress, deadline: float | None
) -> bool:
    """Delete `rows` in batches, in primary key order; False if the deadline passed with rows left.

    Every run deletes at least one batch before it looks at the deadline, so a run that is queued
    again always gets further than the last.
    """
    after: Any = None
    while True:
        page = rows if after is None else rows.filter(pk__gt=after)
        ids = list(page.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return True
        if deadline is not None and clock() >= deadline and counts.total() > 0:
            return False
        with transaction.atomic():
            # The conditions are checked again as the rows go: a row kept meanwhile is not deleted.
            _, deleted = rows.filter(pk__in=ids).only("pk").delete()
        counts.update(deleted)
        progress(sum(deleted.values()))
        after = ids[-1]
