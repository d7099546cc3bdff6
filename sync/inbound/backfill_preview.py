"""What a backfill would do, without doing it (`sync_backfill --dry-run`), and where a run's records stand.

The preview reads what the run would read and classifies each record as the ingest would (create, update,
unchanged, conflict, skipped), then estimates the calls its pushes would cost. It writes nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.db.models import Count
from django.utils import timezone

from crms.base import Change, Connector
from crms.models import Connection
from sync.contracts import EventInput
from sync.delivery.engine import (
    Claimed,
    batch_size_for,
)
from sync.inbound.backfill_bulk import (
    prepared,
)
from sync.inbound.backfill_plan import (
    CallCounter,
    Passes,
    Plan,
    bulk_wanted,
    calls_per_record,
    latest_events,
    patiently,
    record_ids,
    replay,
    run_prefix,
    since_cursor,
    since_filter,
)
from sync.inbound.changes import InFlight, echo_reason
from sync.ingest.services import events_route
from sync.models import BackfillRun, SyncEvent, SyncJob


def backfill_job_states(run: BackfillRun) -> dict[str, int]:
    """The target's jobs whose latest event is one of this run's, by state."""
    rows = (
        SyncJob.objects.filter(
            target__name=run.target, last_event__idempotency_key__startswith=f"event:{run_prefix(run.pk)}"
        )
        .values("state")
        .annotate(n=Count("id"))
    )
    return {row["state"]: row["n"] for row in rows}


@dataclass
class Preview:
    """What a backfill would do, from reads only."""

    records: int = 0
    actions: Counter[str] = field(default_factory=Counter)  # create, update, delete, unchanged, echo, ...
    reads: int = 0  # API calls made to read the source
    bulk: bool = False
    bulk_jobs: int = 0
    pushes: int = 0  # REST calls to the target, about


def backfill_preview(*, plan: Plan, progress: Callable[[int], object] = lambda n: None) -> Preview:
    """Classify every record as the engine would (through its own _prepare and the record links) and count
    the calls the backfill would spend. Writes nothing; a CRM source is read (reads only)."""
    preview = Preview()
    if plan.source_connection is None:
        after = ""
        while ids := record_ids(plan, after, plan.batch):
            _classify(plan, [replay(e, plan.target.name, None) for e in latest_events(plan, ids)], preview)
            preview.records += len(ids)
            after = ids[-1]
            progress(len(ids))
    else:
        preview.reads = _preview_reads(plan, preview, progress)
    _estimate_pushes(plan, preview)
    return preview


def _preview_reads(plan: Plan, preview: Preview, progress: Callable[[int], object]) -> int:
    connection = plan.source_connection
    assert connection is not None  # noqa: S101 - a CRM source
    calls = CallCounter()
    cursor = since_cursor(connection.kind, plan.since)
    seen: set[tuple[str, str, datetime]] = set()  # a pass's overlap is read again: count each change once
    passes = Passes()
    with calls.connected(connection) as connector:
        while True:
            page = patiently(partial(connector.changes, plan.object_type, cursor or None))
            fresh = [
                c
                for c in since_filter(page.changes, plan.since)
                if (c.object_type, c.external_id, c.modified_at) not in seen
            ]
            seen.update((c.object_type, c.external_id, c.modified_at) for c in fresh)
            items, echoes = _as_captured(connection, connector, fresh, plan.target.name)
            preview.actions["echo"] += echoes
            _classify(plan, items, preview)
            preview.records += len(fresh)
            progress(len(fresh))
            cursor = page.cursor or ""
            if not passes.more(page.changes, page.has_more):
                return calls.calls


def _as_captured(
    connection: Connection, connector: Connector, changes: Sequence[Change], target: str
) -> tuple[list[EventInput], int]:
    """The events sync.inbound.changes.capture would make of these changes, without writing: (events, echoes)."""
    links = {
        (link.external_object, link.external_id): link
        for link in connection.links.filter(external_id__in={change.external_id for change in changes})
    }
    items: list[EventInput] = []
    echoes = 0
    in_flight = InFlight(connection)
    for change in changes:
        view = connector.inbound(change)
        link = links.get((change.object_type, change.external_id))
        record_id = link.record_id if link else (view.record_id or f"{connection.name}-{change.external_id}")
        echo = None if change.deleted else echo_reason(link, view)
        if not change.deleted and echo is None and in_flight.echo(link, view) is not None:
            echo = "echo: a write in flight"
        if echo:  # recorded, routed nowhere
            echoes += 1
            continue
        operation = "delete" if change.deleted else ("update" if link else "create")
        data = None if change.deleted else {k: v for k, v in view.fields.items() if link or v not in (None, "")}
        items.append(
            EventInput(
                operation=operation,
                record_id=record_id,
                object_type=change.object_type,
                source=connection.name,
                targets=[target],
                data=data,
                occurred_at=change.modified_at,
                event_id=None,
                raw=None,
            )
        )
    return items, echoes


def _classify(plan: Plan, items: Sequence[EventInput], preview: Preview) -> None:
    """Route the events as the ingest would, then ask the engine's _prepare what each job would send."""
    if not items:
        return
    routes = events_route(items, timezone.now())
    rows = SyncJob.objects.filter(target=plan.target, record_id__in={item.record_id for item in items})
    keys = rows.values_list("record_id", "object_type", "source", "last_occurred_at")
    newest = {(record, kind, source): at for record, kind, source, at in keys}
    jobs: list[SyncJob] = []
    for index, item in enumerate(items):
        route = routes[index]
        if plan.target.pk not in {target.pk for target in route.targets}:
            preview.actions["not_routed"] += 1  # a rule skipped it, or a later delete stops it
            continue
        held = newest.get((item.record_id, item.object_type, item.source))
        if held is not None and item.occurred_at is not None and item.occurred_at < held:
            preview.actions["superseded"] += 1  # the target's job already holds a newer change: nothing sent
            continue
        event = SyncEvent(
            operation=item.operation,
            object_type=item.object_type,
            record_id=item.record_id,
            source=item.source,
            payload=item.data,
            routing=route.decision,
            occurred_at=item.occurred_at or timezone.now(),
        )
        jobs.append(
            SyncJob(
                target=plan.target,
                source=item.source,
                object_type=item.object_type,
                record_id=item.record_id,
                last_event=event,
            )
        )
    for claimed in prepared(jobs):
        preview.actions[_action(claimed)] += 1


def _action(item: Claimed) -> str:
    if item.refused is not None:
        return "refused"  # fails before any call (a required field missing)
    if item.record is None:
        return "never_synced" if item.skip[0] == "never_synced" else "unchanged"
    if item.record.operation == "delete":
        return "delete"
    return "update" if item.record.external_id else "create"


def _estimate_pushes(plan: Plan, preview: Preview) -> None:
    """REST: a batch per call (creates, updates and deletes counted as separate calls), or about a call per
    record for connectors that write one at a time (Capabilities.calls_per_record). Bulk: a job per page of
    creates."""
    creates, updates, deletes = (preview.actions[name] for name in ("create", "update", "delete"))
    preview.bulk = bulk_wanted(plan, preview.records)
    if preview.bulk:
        preview.bulk_jobs, creates = math.ceil(creates / plan.batch), 0
    if calls_per_record(plan.target):
        preview.pushes = creates + updates + deletes
        return
    size = batch_size_for(plan.target)
    preview.pushes = sum(math.ceil(count / size) for count in (creates, updates, deletes))
