"""Backfill: every record in range, replayed from System A's stored events or read from a CRM, sent to
one target through the same pipeline as live changes (events, rules, jobs, the engine).

A run's checkpoint lives in a BackfillRun row and is saved in the same transaction as each page's
events: Ctrl-C or a crash loses at most the page in hand, and that page is done again with the same
event ids, so nothing is stored or sent twice. Above the threshold of a target whose connector writes bulk
jobs (crms.base.BulkWriter, past the connection's threshold) the new jobs are claimed at
once (the dispatcher never sees them pending) and sent as bulk upsert jobs; below it they stay pending for
the engine, like any change. Nothing here knows a vendor: connectors say what they can.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from crms.base import Change, Connector
from crms.models import Connection
from sync.contracts import EventInput
from sync.delivery.leases import lease_owner
from sync.inbound.backfill_bulk import (
    bulk_claim,
    bulk_send,
)
from sync.inbound.backfill_plan import (
    BackfillRefused,
    CallCounter,
    Passes,
    Plan,
    RunLost,
    bulk_wanted,
    latest_events,
    patiently,
    plan_total,
    record_ids,
    replay,
    run_prefix,
    since_cursor,
    since_filter,
)
from sync.inbound.changes import capture
from sync.ingest.services import event_ingest
from sync.models import BackfillRun, Lane, RunState, SyncEvent

logger = logging.getLogger("recordsync.backfill")

# A run whose process shows no progress for this long is taken as dead (killed, machine lost): another may resume it.
STALE_AFTER = timedelta(minutes=10)


# --- what to backfill ----------------------------------------------------------------------------


# --- System A: the latest stored state of each record --------------------------------------------


# --- a CRM: every record, through its connector's changes() -------------------------------------


# --- running -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    run: BackfillRun
    resumed: bool
    stopped_by: str = ""  # why the resumed run stopped last time


def backfill_start(*, plan: Plan, restart: bool, owner: str, now: datetime | None = None) -> Started:
    """Resume the latest run of this backfill unless it is done (or `restart`); else start a new one.

    Only the latest run is looked at: one abandoned by --restart is never resumed. A run held by a
    live process is refused; one whose process vanished (no progress for STALE_AFTER) is taken over.
    """
    now = now or timezone.now()
    latest = _runs(plan).order_by("-started_at", "-pk").first()
    if latest is not None and latest.state != RunState.DONE:
        free = Q(state=RunState.FAILED) | Q(owner="") | Q(owner=owner) | Q(updated_at__lt=now - STALE_AFTER)
        claimed = BackfillRun.objects.filter(free, pk=latest.pk).exclude(state=RunState.DONE)
        if restart:
            taken = claimed.update(
                state=RunState.FAILED,
                owner="",
                finished_at=now,
                updated_at=now,
                last_error="abandoned: started over with --restart",
            )
        else:
            taken = claimed.update(state=RunState.RUNNING, owner=owner, updated_at=now)
        if not taken:
            raise BackfillRefused(
                f"run {latest.pk} of this backfill is running in {latest.owner} (last progress "
                f"{latest.updated_at:%Y-%m-%d %H:%M:%S} UTC); wait for it, or if that process is gone, run this "
                f"again once it has shown no progress for {int(STALE_AFTER.total_seconds() // 60)} minutes"
            )
        if not restart:
            latest.refresh_from_db()
            return Started(latest, resumed=True, stopped_by=latest.last_error)
    total = plan_total(plan)
    run = BackfillRun.objects.create(
        source=plan.source,
        target=plan.target.name,
        object_type=plan.object_type,
        since=plan.since,
        owner=owner,
        total=total,
        started_at=now,
        updated_at=now,
    )
    return Started(run, resumed=False)


def _runs(plan: Plan) -> QuerySet[BackfillRun]:
    runs = BackfillRun.objects.filter(source=plan.source, target=plan.target.name, object_type=plan.object_type)
    return runs.filter(since=plan.since) if plan.since else runs.filter(since__isnull=True)


def run_owner() -> str:
    return f"sync_backfill-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def backfill_run(*, run: BackfillRun, plan: Plan, progress: Callable[[int], object] = lambda n: None) -> BackfillRun:
    """Page through the backfill from the run's checkpoint to the end; `progress` hears of each record handled.

    Stopped by Ctrl-C or an error, the run is marked failed with the reason and keeps its checkpoint.
    """
    calls = CallCounter()
    base_calls = run.api_calls
    try:
        if plan.source_connection is None:
            _replay_pages(run, plan, calls, base_calls, progress)
        else:
            _read_pages(run, plan, calls, base_calls, progress)
    except BaseException as exc:
        BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(
            state=RunState.FAILED,
            owner="",
            api_calls=base_calls + calls.calls,
            updated_at=timezone.now(),
            last_error=_stop_reason(run, exc),
        )
        raise
    finished = timezone.now()
    BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(
        state=RunState.DONE,
        owner="",
        finished_at=finished,
        updated_at=finished,
        api_calls=base_calls + calls.calls,
        last_error="",
    )
    run.refresh_from_db()
    logger.info("backfill done", extra={"run": run.pk, "processed": run.processed, "counts": run.counts})
    return run


def _stop_reason(run: BackfillRun, exc: BaseException) -> str:
    how = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{how} after {run.processed} record(s): {what}"[:2000]


def _replay_pages(
    run: BackfillRun, plan: Plan, calls: CallCounter, base_calls: int, progress: Callable[[int], object]
) -> None:
    while ids := record_ids(plan, run.cursor, plan.batch):
        events = latest_events(plan, ids)
        items = [replay(e, plan.target.name, f"{run_prefix(run.pk)}{e.pk}") for e in events]
        _page(
            run,
            plan,
            cursor=ids[-1],
            write=partial(_replay_write, items, run.pk),
            calls=calls,
            base_calls=base_calls,
            progress=progress,
        )


def _replay_write(items: Sequence[EventInput], run_pk: int) -> tuple[int, Counter[str]]:
    keys = [f"event:{item.event_id}" for item in items]
    seen = SyncEvent.objects.filter(idempotency_key__in=keys).count()  # a page done before a crash: replays
    result = event_ingest(
        items=items, idempotency_key=None, is_batch=True, request_id=f"backfill:{run_pk}", lane=Lane.BULK
    )
    routed = sum(1 for answer in result.answers if answer["jobs"])
    counts = Counter({"replayed": len(items) - seen, "already_replayed": seen, "not_routed": len(items) - routed})
    return len(items), counts


def _capture_write(
    connection: Connection, connector: Connector, changes: Sequence[Change], plan: Plan, run_pk: int
) -> tuple[int, Counter[str]]:
    counts = capture(
        connection=connection,
        connector=connector,
        changes=changes,
        targets=[plan.target.name],
        id_prefix=run_prefix(run_pk),
        lane=Lane.BULK,
    )
    return counts["captured"] + counts["echo"], counts


def _read_pages(
    run: BackfillRun, plan: Plan, calls: CallCounter, base_calls: int, progress: Callable[[int], object]
) -> None:
    connection = plan.source_connection
    assert connection is not None  # noqa: S101 - a CRM source
    cursor = run.cursor or since_cursor(connection.kind, plan.since)
    passes = Passes()
    with calls.connected(connection) as connector:
        while True:
            page = patiently(partial(connector.changes, plan.object_type, cursor or None))
            changes = since_filter(page.changes, plan.since)
            write = partial(_capture_write, connection, connector, changes, plan, run.pk)
            _page(
                run, plan, cursor=page.cursor or "", write=write, calls=calls, base_calls=base_calls, progress=progress
            )
            cursor = page.cursor or ""
            if not passes.more(page.changes, page.has_more):
                return


def _page(
    run: BackfillRun,
    plan: Plan,
    *,
    cursor: str,
    write: Callable[[], tuple[int, Counter[str]]],
    calls: CallCounter,
    base_calls: int,
    progress: Callable[[int], object],
) -> None:
    """One page: its events (and jobs), the Bulk claim and the checkpoint in one transaction; then the
    Bulk send."""
    owner = lease_owner()
    started = timezone.now()
    with transaction.atomic():
        handled, counts = write()
        claimed = 0
        if bulk_wanted(plan, max(run.total or 0, run.processed + handled)):
            claimed = bulk_claim(plan, run.pk, owner, started)
            counts["bulk_claimed"] += claimed
        _checkpoint(run, cursor=cursor, handled=handled, counts=counts, api_calls=base_calls + calls.calls)
    progress(handled)
    if claimed:
        sent = bulk_send(plan, run, owner, calls)
        _counts_add(run, sent, api_calls=base_calls + calls.calls)


def _checkpoint(run: BackfillRun, *, cursor: str, handled: int, counts: Counter[str], api_calls: int) -> None:
    """Saved only while this process still holds the run; raising rolls the page back with it."""
    merged = Counter(run.counts)
    merged.update(counts)
    now = timezone.now()
    saved = BackfillRun.objects.filter(pk=run.pk, owner=run.owner, state=RunState.RUNNING).update(
        cursor=cursor, processed=run.processed + handled, counts=dict(merged), api_calls=api_calls, updated_at=now
    )
    if not saved:
        raise RunLost(f"run {run.pk} was taken over by another process; this one stops")
    run.cursor, run.processed, run.counts, run.api_calls = cursor, run.processed + handled, dict(merged), api_calls


def _counts_add(run: BackfillRun, counts: Counter[str], *, api_calls: int) -> None:
    merged = Counter(run.counts)
    merged.update(counts)
    run.counts, run.api_calls = dict(merged), api_calls
    BackfillRun.objects.filter(pk=run.pk, owner=run.owner).update(
        counts=run.counts, api_calls=api_calls, updated_at=timezone.now()
    )


# --- Bulk API 2.0 ----------------------------------------------------------------------------------


# --- where a run's records stand -------------------------------------------------------------------


# --- dry run -------------------------------------------------------------------------------------
