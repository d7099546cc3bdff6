"""Leases on jobs: who holds a batch, and how held jobs come back when a holder stops, dies or loses its task.

A batch is held twice: claimed by a dispatcher (a JobClaim per job, the job still pending), then in flight
under the worker that started it (the job's lease_owner). An owner names its process (`pid-claim@host`), so
a dead holder is found by its missing heartbeat (sync.delivery.liveness): its claims are dropped at once (no
call was made), its jobs in flight go back to pending, fenced when a call may still land.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db import connection as db
from django.utils import timezone

from sync import transitions
from sync.delivery import liveness
from sync.models import JobClaim, JobState, SyncJob

# The engine's logger: operators filter on it, and a batch's lines stay under one name.
logger = logging.getLogger("recordsync.engine")

# After an interrupted call's timeouts, this much more before its jobs may be sent again.
FENCE_MARGIN_SECONDS = 5


TAKEN = "take"  # in the owner of claims whose task a worker took from the broker (batch_taken)


CLAIM_GRACE_SECONDS = 10  # a claim untaken for a call's timeouts and this long has lost its task


RELEASE_RETRY_SECONDS = 1.0  # between two tries to hand a batch back while the database is away


def leases_expire(*, now: datetime) -> int:
    """Claims that ran out are dropped, and jobs in flight whose lease ran out (a killed worker, a lost task)
    go back to pending. Returns how many jobs were freed."""
    freed = transitions.unclaim(JobClaim.objects.filter(expires_at__lt=now))
    return freed + transitions.to_pending(
        SyncJob.objects.filter(state=JobState.IN_FLIGHT, lease_expires_at__lt=now), now=now
    )


def lease_owner() -> str:
    """Unique per claim, and names the process holding it: `pid-claim@host` (operators, the kill -9 proof
    and leases_reap read it)."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:20]}@{liveness.host_name()}"


def lease_holder(owner: str) -> str | None:
    """The `host:pid` heartbeat key of a lease's holder, or None for a lease of another format."""
    pid, _, rest = owner.partition("-")
    host = rest.partition("@")[2]
    return f"{host}:{pid}" if pid.isdigit() and host else None


def batch_taken(*, job_ids: Sequence[int]) -> int:
    """A worker took the task of these claimed jobs: their claims name it now, so that if it dies before
    starting them (a popped Redis task is gone with it) they are freed at once rather than after the lease."""
    taken = f"{os.getpid()}-{TAKEN}{uuid.uuid4().hex[:8]}@{liveness.host_name()}"
    return JobClaim.objects.filter(job_id__in=job_ids).update(owner=taken)


def leases_reap(*, now: datetime) -> int:
    """Jobs whose holder is known dead (its sentinel saw it go, or its heartbeat stopped) are freed now instead
    of at lease expiry: claimed (a dispatcher killed between its claim and queuing the task, a worker killed
    after taking the task), at once: no call was made, and a task that does turn up finds nothing left to
    start; in flight, back to pending, fenced, since a call the holder had out may still land."""
    claimers = set(JobClaim.objects.values_list("owner", flat=True).distinct())
    in_flight = SyncJob.objects.filter(state=JobState.IN_FLIGHT)
    flying = set(in_flight.exclude(lease_owner="").values_list("lease_owner", flat=True))
    holders = {owner: lease_holder(owner) for owner in claimers | flying}
    dead = liveness.dead_among({h for h in holders.values() if h}, now=now)
    reaped = 0
    for owner, holder in holders.items():
        if holder not in dead:
            continue
        if owner in claimers:
            reaped += transitions.unclaim(JobClaim.objects.filter(owner=owner))
        if owner in flying:
            # A call may have begun up to one beat after the holder was last seen alive.
            fence = call_fence(dead[holder].timestamp() + liveness.BEAT_SECONDS)
            reaped += transitions.to_pending(in_flight.filter(lease_owner=owner), now=now, fence_until=fence)
    # A claim whose task no worker has taken for longer than any batch ahead of it can take: the task is
    # lost (a Redis task popped by a worker killed at that moment). A task that does still turn up finds
    # nothing left to start, so nothing is sent twice.
    waited = settings.CRM_HTTP_CONNECT_TIMEOUT + settings.CRM_HTTP_READ_TIMEOUT + CLAIM_GRACE_SECONDS
    lost = JobClaim.objects.filter(claimed_at__lt=now - timedelta(seconds=waited)).exclude(owner__contains=TAKEN)
    return reaped + transitions.unclaim(lost)


# How often the dispatcher vacuums the claims (claims_vacuum).
CLAIMS_VACUUM_SECONDS = 5.0


def claims_vacuum() -> bool:
    """VACUUM the claims table (PostgreSQL), as the dispatcher does every CLAIMS_VACUUM_SECONDS.

    Every batch inserts 200 claims and deletes them when a worker starts it. Autovacuum looks at a table at most
    once a minute (autovacuum_naptime), in which a drain leaves 100,000 dead claims behind; the claim's and the
    back-pressure's reads of the live few then scan all of them: a claim's tick took 5.5 ms of database time over
    65,600 dead claims, 2.0 ms once they were vacuumed (docs/BENCHMARKS.md). The table holds a few thousand live
    rows, so this takes milliseconds. Not inside a transaction (VACUUM cannot run in one), nor on SQLite."""
    if db.vendor != "postgresql" or db.in_atomic_block:
        return False
    with db.cursor() as cursor:
        cursor.execute(f"VACUUM (SKIP_LOCKED) {JobClaim._meta.db_table}")
    return True


def outstanding_limit(*, now: datetime) -> int:
    """Batches of one connection queued or in flight at once: SYNC_OUTSTANDING_PER_WORKER for each live
    worker across the fleet (heartbeats), or SYNC_OUTSTANDING_BATCHES while no worker has reported."""
    live = liveness.alive("worker", now=now).count()
    return max(1, settings.SYNC_OUTSTANDING_PER_WORKER * live) if live else settings.SYNC_OUTSTANDING_BATCHES


def leases_release(*, owner: str, fence_until: datetime | None = None) -> int:
    """Jobs still in flight under this lease go back to pending at once (not sent again before `fence_until`)."""
    leased = SyncJob.objects.filter(lease_owner=owner, state=JobState.IN_FLIGHT)
    return transitions.to_pending(leased, now=timezone.now(), fence_until=fence_until)


def release_when_back(owner: str, fence: datetime | None, *, until: datetime) -> int:
    """leases_release, tried again each second while the database is away; past `until` (the lease's end)
    the lease expiry hands the jobs back instead."""
    while True:
        try:
            return leases_release(owner=owner, fence_until=fence)
        except DatabaseError:
            db.close()  # the broken connection: the next try opens a new one
            if timezone.now() >= until:
                return 0
            time.sleep(RELEASE_RETRY_SECONDS)


def call_fence(started: float | None) -> datetime | None:
    """When an interrupted call that began at `started` can no longer land: its connect and read
    timeouts and a margin after its start. None when no call was under way."""
    if started is None:
        return None
    budget = settings.CRM_HTTP_CONNECT_TIMEOUT + settings.CRM_HTTP_READ_TIMEOUT + FENCE_MARGIN_SECONDS
    return datetime.fromtimestamp(started, UTC) + timedelta(seconds=budget)


def batch_release(job_ids: Sequence[int]) -> int:
    """A claimed batch whose task could not be queued (the broker is down) is free for the next claim."""
    return transitions.unclaim(JobClaim.objects.filter(job_id__in=job_ids))
