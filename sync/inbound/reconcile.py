"""Reconcile: read every record of one CRM object and compare it with the record links, to queue
what polling could not see.

Polling by modification time misses what a CRM never reports there: some show deletions only by
webhook (a lost delivery is never sent again), others forget them after days (docs/reconcile.md has
which CRM does which), and a change committed late with an earlier stamp can slip behind a cursor.
A reconcile pages through the whole object with the connector's `changes(object_type, None)` and
sorts every record into one action:

- creates: a CRM record with no link (never captured);
- updates: a linked record whose values differ from the link's, by the rule that tells an echo
  from a change (`sync.inbound.changes.echo_reason`);
- deletes: a link whose record the scan did not see, and that a read by id confirms is gone;
- unchanged, and the ones left alone: already_captured (an event for this record at this
  modification time exists), already_deleted (the record's latest event is a delete),
  present_on_recheck (the scan missed it but it is there: it moved while the scan paged).

The missing changes are queued through `sync.inbound.changes.capture`, as polling queues its own, so the
rules route them like any captured change. Each page is queued, with the run's counts, in one
transaction; only the seen ids are kept in memory. A dry run makes the same calls and writes no row.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from crms.base import Change, Connector
from crms.models import Connection
from sync.delivery.engine import throttled_connector
from sync.inbound.changes import capture, change_digest, echo_reason, readable_objects
from sync.models import BreakerState, CircuitBreaker, Lane, ReconcileRun, RecordLink, RunState, SyncEvent

logger = logging.getLogger("recordsync.reconcile")

QUEUED = ("creates", "updates", "deletes")
ACTIONS = (*QUEUED, "unchanged", "already_captured", "already_deleted", "present_on_recheck")
DEFAULT_SAMPLES = 5
# Links looked at per query, and ids per read() when confirming a deletion.
LINK_CHUNK = 200

Clock = Callable[[], datetime]
PageHook = Callable[[int, int], None]  # (pages read, records seen) after each page
EventKey = tuple[str, datetime, str]  # (record id, modification time, values digest): the same captured change


@dataclass
class Tally:
    """What one run found: counts and a few sample external ids per action, and capture's own counts."""

    samples: int
    counts: Counter[str] = field(default_factory=Counter)
    ids: dict[str, list[str]] = field(default_factory=dict)
    queued: Counter[str] = field(default_factory=Counter)
    pages: int = 0
    records: int = 0

    def add(self, action: str, external_id: str) -> None:
        self.counts[action] += 1
        kept = self.ids.setdefault(action, [])
        if len(kept) < self.samples:
            kept.append(external_id)

    def as_counts(self) -> dict[str, int]:
        return {action: self.counts[action] for action in ACTIONS}

    def as_report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "pages": self.pages,
            "records": self.records,
            "samples": {action: self.ids.get(action, []) for action in ACTIONS},
        }
        if self.queued:
            report["capture"] = dict(sorted(self.queued.items()))  # captured / echo / already_captured
        return report


def reconcile(
    *,
    connection: Connection,
    object_type: str,
    dry_run: bool,
    clock: Clock = timezone.now,
    samples: int = DEFAULT_SAMPLES,
    on_page: PageHook | None = None,
) -> ReconcileRun:
    """Scan `object_type` in `connection`, compare it with the links, and queue what is missing.

    Returns the run: saved with its counts (state done) when queuing, unsaved when `dry_run`.
    A failure marks the saved run failed, with the error, and is raised again.
    """
    connector = throttled_connector(connection, lane=Lane.BULK)  # behind live changes and polls
    run = ReconcileRun(connection=connection, object_type=object_type, dry_run=dry_run, started_at=clock())
    if not dry_run:
        run.save()
    tally = Tally(samples=samples)
    try:
        seen = _scan(run, connector, tally, clock, on_page)
        _sweep_links(run, connector, seen, tally, clock)
    except Exception as exc:
        _finish(run, tally, clock, error=connector.redact(f"{type(exc).__name__}: {exc}"))
        logger.warning(
            "reconcile failed",
            extra={"connection": connection.name, "object_type": object_type, "run": run.pk, "error": run.last_error},
        )
        raise
    _finish(run, tally, clock)
    logger.info(
        "reconciled",
        extra={
            "connection": connection.name,
            "object_type": object_type,
            "run": run.pk,
            "dry_run": dry_run,
            **run.counts,
        },
    )
    return run


def _finish(run: ReconcileRun, tally: Tally, clock: Clock, *, error: str = "") -> None:
    run.state = RunState.FAILED if error else RunState.DONE
    run.last_error = error[:2000]
    run.counts, run.report, run.finished_at = tally.as_counts(), tally.as_report(), clock()
    if not run.dry_run:
        run.save(update_fields=["state", "last_error", "counts", "report", "finished_at"])


# --- the scan: every record the CRM has now ----------------------------------------------------


def _scan(run: ReconcileRun, connector: Connector, tally: Tally, clock: Clock, on_page: PageHook | None) -> set[str]:
    """Page through the whole object; queue each page's creates and updates. Returns the ids seen."""
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        page = connector.changes(run.object_type, cursor)
        fresh: list[Change] = []
        for change in page.changes:
            # Deletions a connector reports (those the CRM still remembers) are not records; an offset
            # page can repeat a record that moved while we paged: it is compared once.
            if change.deleted or change.external_id in seen:
                continue
            seen.add(change.external_id)
            fresh.append(change)
        tally.pages += 1
        tally.records += len(fresh)
        _queue(run, connector, _compare(run, connector, fresh, tally), tally, clock)
        if on_page is not None:
            on_page(tally.pages, len(seen))
        if not page.has_more:
            return seen
        cursor = page.cursor


def _compare(run: ReconcileRun, connector: Connector, changes: Sequence[Change], tally: Tally) -> list[Change]:
    """The page's records that must be queued; every record is counted under one action."""
    connection = run.connection
    found = RecordLink.objects.filter(
        system=connection, external_object=run.object_type, external_id__in=[c.external_id for c in changes]
    )
    links = {link.external_id: link for link in found}
    wanted: list[tuple[Change, str, str]] = []  # (change, action, the record id its event would carry)
    for change in changes:
        view = connector.inbound(change)
        link = links.get(change.external_id)
        if link is None:
            # The id capture gives a record first seen in the CRM.
            wanted.append((change, "creates", view.record_id or f"{connection.name}-{change.external_id}"))
        elif echo_reason(link, view) is None:
            wanted.append((change, "updates", link.record_id))
        else:
            tally.add("unchanged", change.external_id)
    keys = [(record_id, c.modified_at, change_digest(c)) for c, _, record_id in wanted]
    captured = _captured(connection, run.object_type, keys)
    missing: list[Change] = []
    for (change, action, _), key in zip(wanted, keys, strict=True):
        if key in captured:
            # Captured but not yet agreed on both sides: the event exists, a second one would only
            # repeat it. Matched on (record, modification time, values), whichever id prefix it was
            # given: stamps have whole seconds, so a second edit in the same second is not captured yet.
            tally.add("already_captured", change.external_id)
            continue
        tally.add(action, change.external_id)
        missing.append(change)
    return missing


def _captured(connection: Connection, object_type: str, keys: Sequence[EventKey]) -> set[EventKey]:
    """Which (record id, modification time, values digest) already have an event from this connection."""
    if not keys:
        return set()
    rows = SyncEvent.objects.filter(
        source=connection.name,
        object_type=object_type,
        record_id__in={k[0] for k in keys},
        occurred_at__in={k[1] for k in keys},
    ).values_list("record_id", "occurred_at", "idempotency_key")
    return {(record_id, at, key.rpartition("#")[2]) for record_id, at, key in rows}


# --- the links the scan did not see: deleted in the CRM ----------------------------------------


def _sweep_links(run: ReconcileRun, connector: Connector, seen: set[str], tally: Tally, clock: Clock) -> None:
    """Walk the object's links by primary key (never all at once) and queue the deletes they show.

    Links made after the scan began are left out: their record may have been created after the
    page it would have been on was read.
    """
    links = RecordLink.objects.filter(
        system=run.connection, external_object=run.object_type, created_at__lt=run.started_at
    ).order_by("pk")
    after = 0
    while True:
        chunk = list(links.filter(pk__gt=after).values_list("pk", "external_id")[:LINK_CHUNK])
        if not chunk:
            return
        after = chunk[-1][0]
        unseen = [pk for pk, external_id in chunk if external_id not in seen]
        if unseen:
            gone = _gone(run, connector, unseen, tally)
            now = clock()
            deletes = [
                Change(run.object_type, external_id, fields={}, modified_at=now, deleted=True) for external_id in gone
            ]
            _queue(run, connector, deletes, tally, clock)


def _gone(run: ReconcileRun, connector: Connector, link_pks: Sequence[int], tally: Tally) -> list[str]:
    """The external ids, among these unseen links, that are really deleted and not known to be."""
    latest = SyncEvent.objects.filter(record_id=OuterRef("record_id")).order_by("-occurred_at", "-received_at")
    rows = (
        RecordLink.objects.filter(pk__in=link_pks)
        .annotate(latest=Subquery(latest.values("operation")[:1]))
        .order_by("pk")
        .values_list("external_id", "latest")
    )
    unknown: list[str] = []
    for external_id, operation in rows:
        if operation == "delete":
            tally.add("already_deleted", external_id)
        else:
            unknown.append(external_id)
    # A full scan by offset pages skips a record when another moves ahead of it mid-scan: asking
    # for each one by id is what keeps a record that is there from being deleted in System A.
    present = connector.read(run.object_type, unknown) if unknown else {}
    for external_id in present:
        tally.add("present_on_recheck", external_id)
    gone = [external_id for external_id in unknown if external_id not in present]
    for external_id in gone:
        tally.add("deletes", external_id)
    return gone


# --- queuing -----------------------------------------------------------------------------------


def _queue(run: ReconcileRun, connector: Connector, changes: Sequence[Change], tally: Tally, clock: Clock) -> None:
    """Capture the missing changes and save the run's counts in one transaction (a dry run writes nothing)."""
    if run.dry_run:
        return
    with transaction.atomic():
        if changes:
            tally.queued.update(
                capture(
                    connection=run.connection,
                    connector=connector,
                    changes=changes,
                    id_prefix=f"reconcile:{run.pk}:",
                    lane=Lane.BULK,  # behind live changes at the targets
                )
            )
        ReconcileRun.objects.filter(pk=run.pk).update(counts=tally.as_counts(), report=tally.as_report())


# --- every connection, on a schedule -----------------------------------------------------------


def breaker_closed(connection: Connection) -> bool:
    return not CircuitBreaker.objects.filter(connection=connection).exclude(state=BreakerState.CLOSED).exists()


def reconcile_targets(connections: Iterable[Connection]) -> list[tuple[Connection, str]]:
    """Every (connection, object) that is read from, in name order."""
    return [(connection, name) for connection in connections for name in readable_objects(connection)]


def reconcile_all() -> dict[str, dict[str, int]]:
    """Reconcile every readable object of every enabled connection; the counts by "connection:object".

    Run daily by the django-q2 schedule that migration sync/0010 installs. Retry policy: none
    (max_attempts=1): a failed run is kept as a row with its error, and tomorrow's run looks
    again. One failing connection does not stop the others; a connection whose circuit breaker
    is not closed is skipped, so a reconcile never hammers a target that is down.
    """
    done: dict[str, dict[str, int]] = {}
    failed: list[str] = []
    skipped: list[str] = []
    for connection, object_type in reconcile_targets(Connection.objects.filter(enabled=True).order_by("name")):
        key = f"{connection.name}:{object_type}"
        if not breaker_closed(connection):
            skipped.append(key)
            continue
        try:
            done[key] = reconcile(connection=connection, object_type=object_type, dry_run=False).counts
        except Exception:
            logger.exception("reconcile failed", extra={"connection": connection.name, "object_type": object_type})
            failed.append(key)
    totals = Counter[str]()
    for counts in done.values():
        totals.update(counts)
    logger.info(
        "reconcile_all",
        extra={"runs": len(done), "failed": failed, "skipped_breaker": skipped, **{k: totals[k] for k in ACTIONS}},
    )
    return done
