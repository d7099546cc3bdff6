"""Backfill through a connector's bulk writer (crms.base.BulkWriter): large pages of upserts as asynchronous jobs.

The page's jobs are claimed inside its transaction (the dispatcher never sees them pending), sent as one bulk
job per object and field set, and finished with the engine's own outcomes_save; stopped, they go back at once.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from crms.base import BulkWriter, ConnectorError, PushResult
from crms.models import Connection
from sync import transitions
from sync.delivery.engine import (
    Claimed,
    jobs_prepare,
    results_outcomes,
)
from sync.delivery.leases import leases_release
from sync.delivery.outcomes import Outcome, outcomes_save
from sync.inbound import backfill_plan
from sync.inbound.backfill_plan import (
    CallCounter,
    Plan,
    patiently,
    run_prefix,
)
from sync.models import BackfillRun, BreakerState, CircuitBreaker, JobState, SyncJob

# Seconds between looks at a running Bulk job, doubling from the first to the most.
BULK_WAIT_FIRST = 1.0


BULK_WAIT_MAX = 30.0


# A field set shared by fewer records than this in a page goes through the engine: a Bulk job for a handful of
# records costs more calls than the REST batch that carries them.
BULK_MIN_GROUP = 10


def _page_jobs(plan: Plan, run_pk: int, since: datetime) -> QuerySet[SyncJob]:
    """The target's due jobs this page's events just made or bumped."""
    return SyncJob.objects.filter(
        target=plan.target,
        state__in=transitions.DUE,
        updated_at__gte=since,
        last_event__idempotency_key__startswith=f"event:{run_prefix(run_pk)}",
    )


def prepared(jobs: Sequence[SyncJob]) -> list[Claimed]:
    """What the engine would send for each job (its own preparation)."""
    return jobs_prepare(jobs)


def _bulkable(item: Claimed) -> bool:
    """Bulk upserts match on the external-id field only: a linked record is updated by the CRM's own id
    (it may lack the key), and deletes are not upserts, so those go through the engine."""
    record = item.record
    return item.refused is None and record is not None and record.operation == "upsert" and not record.external_id


def bulk_claim(plan: Plan, run_pk: int, owner: str, since: datetime) -> int:
    """Inside the page's transaction: the dispatcher never sees these jobs pending."""
    if CircuitBreaker.objects.filter(connection=plan.target).exclude(state=BreakerState.CLOSED).exists():
        return 0  # the connection is failing: the engine's breaker decides when to try again
    jobs = list(_page_jobs(plan, run_pk, since).select_related("target", "last_event"))
    groups = _bulk_groups([item for item in prepared(jobs) if _bulkable(item)])
    ids = [item.job.id for group in groups if len(group) >= BULK_MIN_GROUP for item in group]
    now = timezone.now()
    lease = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    return transitions.take(SyncJob.objects.filter(id__in=ids), owner=owner, lease_until=lease, now=now)


def bulk_send(plan: Plan, run: BackfillRun, owner: str, calls: CallCounter) -> Counter[str]:
    """Send the claimed jobs as Bulk upserts, one job per object and field set; write their states, attempts
    and links with the engine's own outcomes_save. Stopped (Ctrl-C), the jobs go back to pending at once."""
    try:
        jobs = list(
            SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT).select_related("target", "last_event")
        )
        items = prepared(jobs)
        outcomes: list[Outcome] = []
        rest = [item.job.id for item in items if not _bulkable(item)]
        if rest:  # changed since the claim: the engine sends them
            transitions.to_pending(SyncJob.objects.filter(id__in=rest, lease_owner=owner), now=timezone.now())
        with calls.connected(plan.target) as connector:
            if not isinstance(connector, BulkWriter):
                raise TypeError(f"{plan.target.name} ({plan.target.kind}) writes no bulk jobs")
            for group in _bulk_groups([item for item in items if _bulkable(item)]):
                outcomes += _bulk_job(connector, plan.target, group, lambda: _heartbeat(run, owner))
        states = outcomes_save(outcomes, owner=owner, now=timezone.now())
    except BaseException:
        leases_release(owner=owner)
        raise
    return Counter(f"bulk_{state}" for state in states)


def _bulk_groups(items: Sequence[Claimed]) -> list[list[Claimed]]:
    """One Bulk job per object and set of fields: a CSV column a record lacks would be written as null."""
    groups: dict[tuple[str, tuple[str, ...]], list[Claimed]] = defaultdict(list)
    for item in items:
        assert item.record is not None  # noqa: S101 - bulkable items carry a record
        groups[(item.record.object_type, tuple(sorted(item.record.fields)))].append(item)
    return list(groups.values())


def _bulk_job(
    connector: BulkWriter, connection: Connection, items: Sequence[Claimed], heartbeat: Callable[[], None]
) -> list[Outcome]:
    records = [item.record for item in items if item.record is not None]
    started = time.monotonic()
    error: ConnectorError | None = None
    try:
        job_id = patiently(lambda: connector.bulk_start(records[0].object_type, records))
        results = _bulk_wait(connector, job_id, heartbeat)
    except ConnectorError as exc:  # the job as a whole: every record retries later through the engine
        error = exc
        results = [PushResult(r.record_id, "error", error=exc) for r in records]
    duration = int((time.monotonic() - started) * 1000)
    return results_outcomes(connection, items, results, error, duration)


def _bulk_wait(connector: BulkWriter, job_id: str, heartbeat: Callable[[], None]) -> list[PushResult]:
    wait = BULK_WAIT_FIRST
    while True:
        results = patiently(lambda: connector.bulk_poll(job_id))
        if results is not None:
            return results
        heartbeat()
        backfill_plan.sleep(wait)  # one seam for every wait of a run (tests swap it)
        wait = min(wait * 2, BULK_WAIT_MAX)


def _heartbeat(run: BackfillRun, owner: str) -> None:
    """A Bulk job may run for long: keep the jobs' lease and the run's liveness fresh meanwhile."""
    now = timezone.now()
    SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT).update(
        lease_expires_at=now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    )
    BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(updated_at=now)
