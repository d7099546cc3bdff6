"""Inbound capture: changes made in a CRM become ordinary SyncEvents with the CRM as source, so
rules, the engine and the status apply to them unchanged.

Polling reads one page at a time through the connector's `changes()` and checkpoints the
cursor in the same transaction as the page's events: an interrupted run resumes at the page it
stopped on, and re-reading a page (or the overlap window a connector keeps on purpose) never
makes a second event, since each change's event id is (connection, object, id, modified time).
One poller per (connection, object) at a time: the cursor row is claimed with a lease. A poll that
fails (or cannot run: the breaker is open) is not due again at the next interval but after an
exponential backoff with jitter, reset by the next page read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from rest_framework.exceptions import NotFound

from crms.base import Change, Connector, ConnectorError, Inbound
from crms.build import connector_for
from crms.models import Connection
from crms.registry import UnknownKind, connector_class
from recordsync.logging import request_id_var
from recordsync.metrics import ECHOES
from rules.contracts import target_payload
from sync.contracts import EventInput
from sync.delivery import config
from sync.delivery.engine import throttled_connector
from sync.ingest.services import event_ingest
from sync.models import (
    BreakerState,
    CircuitBreaker,
    InboundCursor,
    JobState,
    Lane,
    RecordLink,
    RecordRead,
    SyncEvent,
    SyncJob,
)

logger = logging.getLogger("recordsync.inbound")

# A poller that died holding the cursor gives it up after this long.
POLL_LEASE = timedelta(minutes=5)


def poll_backoff_seconds(failures: int, retry_after: float | None = None) -> float:
    """How long a (connection, object) whose last `failures` polls failed waits before the next: doubling from
    SYNC_POLL_BACKOFF_BASE_SECONDS (5) up to SYNC_POLL_BACKOFF_CAP_SECONDS (300), half of it random so the
    objects of one connection spread out; never sooner than the target asked, within the cap."""
    base = float(settings.SYNC_POLL_BACKOFF_BASE_SECONDS)
    cap = float(settings.SYNC_POLL_BACKOFF_CAP_SECONDS)
    ceiling = min(cap, base * 2 ** max(0, failures - 1))
    jittered = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret
    return max(jittered, min(retry_after or 0.0, cap))


@dataclass(frozen=True)
class PollResult:
    pages: int
    counts: dict[str, int]  # captured, echo, already_captured
    cursor: str
    skipped: str = ""  # why nothing was read (another poller holds the cursor)


def poll(
    *,
    connection: Connection,
    object_type: str,
    connector: Connector,
    max_pages: int | None = None,
    owner: str,
    clock: Callable[[], datetime] = timezone.now,
) -> PollResult:
    """Read changes page by page until the connector has no more (or `max_pages`)."""
    row, _ = InboundCursor.objects.get_or_create(connection=connection, object_type=object_type)
    if CircuitBreaker.objects.filter(connection=connection).exclude(state=BreakerState.CLOSED).exists():
        # While the breaker is open no call is made, polls included; the probe is a push's to make.
        skipped = "the connection's circuit breaker is open"
        _poll_failed(row.pk, skipped, None, clock())
        InboundCursor.objects.filter(pk=row.pk, lease_owner=owner).update(lease_owner="", lease_until=None)
        return PollResult(0, {}, row.cursor, skipped=skipped)
    if not _claim(row.pk, owner, clock()):
        return PollResult(0, {}, row.cursor, skipped="another poller holds this cursor")
    context = request_id_var.set(request_id_var.get() or f"poll-{uuid.uuid4().hex[:20]}")
    pages, totals = 0, Counter[str]()
    try:
        while max_pages is None or pages < max_pages:
            cursor = InboundCursor.objects.values_list("cursor", flat=True).get(pk=row.pk)
            page = connector.changes(object_type, cursor or None)
            with transaction.atomic():
                counts = capture(connection=connection, connector=connector, changes=page.changes)
                InboundCursor.objects.filter(pk=row.pk, lease_owner=owner).update(
                    cursor=page.cursor or "",
                    polled_at=clock(),
                    pages=F("pages") + 1,
                    captured=F("captured") + counts["captured"],
                    lease_until=clock() + POLL_LEASE,
                    last_error="",
                    failures=0,
                    retry_at=None,
                )
            pages += 1
            totals.update(counts)
            if not page.has_more:
                break
    except ConnectorError as exc:
        exc.message = connector.redact(exc.message)
        _poll_failed(row.pk, f"{exc.code}: {exc.message}", exc.retry_after, clock())
        raise
    except Exception as exc:
        _poll_failed(row.pk, connector.redact(f"{type(exc).__name__}: {exc}"), None, clock())
        raise
    finally:
        InboundCursor.objects.filter(pk=row.pk, lease_owner=owner).update(lease_owner="", lease_until=None)
        final = InboundCursor.objects.values_list("cursor", flat=True).get(pk=row.pk)
        logger.info(
            "polled", extra={"connection": connection.name, "object_type": object_type, "pages": pages, **dict(totals)}
        )
        request_id_var.reset(context)
    return PollResult(pages, dict(totals), final)


def _poll_failed(pk: int, error: str, retry_after: float | None, now: datetime) -> None:
    """One more poll in a row that did not complete: not due again before its backoff has passed."""
    failures = 1 + (InboundCursor.objects.filter(pk=pk).values_list("failures", flat=True).first() or 0)
    retry_at = now + timedelta(seconds=poll_backoff_seconds(failures, retry_after))
    InboundCursor.objects.filter(pk=pk).update(last_error=error[:2000], failures=failures, retry_at=retry_at)


def _claim(pk: int, owner: str, now: datetime) -> bool:
    """Free, expired, or already ours (the dispatcher claims a due poll before queueing its task)."""
    free = Q(lease_owner="") | Q(lease_until__lt=now) | Q(lease_owner=owner)
    return bool(InboundCursor.objects.filter(free, pk=pk).update(lease_owner=owner, lease_until=now + POLL_LEASE))


def readable_objects(connection: Connection) -> list[str]:
    """The objects a connection is polled for: its `poll_objects` config, else every object its connector knows."""
    try:
        capabilities = connector_class(connection.kind).capabilities
    except UnknownKind:
        return []
    if "inbound" not in capabilities.directions:
        return []
    configured = connection.config.get("poll_objects")
    return [str(name) for name in configured] if configured else [n for n in capabilities.objects if n != "*"]


def polls_claim(*, now: datetime) -> list[tuple[int, str, str]]:
    """The (connection, object) polls that are due, each claimed for one task: (connection id, object, owner).

    Due: `poll_interval` seconds (a live setting; 0 turns polling off) since the last poll, and
    past the backoff of a poll that failed (`retry_at`). The claim is a conditional update of the
    cursor's lease, so dispatchers on several machines never queue one poll twice; a lost task's
    claim runs out with the lease.
    """
    claimed: list[tuple[int, str, str]] = []
    for connection in Connection.objects.filter(enabled=True).order_by("name"):
        interval = config.effective(connection.pk).poll_interval
        if not interval:
            continue
        for object_type in readable_objects(connection):
            row, _ = InboundCursor.objects.get_or_create(connection=connection, object_type=object_type)
            if row.polled_at is not None and row.polled_at + timedelta(seconds=interval) > now:
                continue
            if row.retry_at is not None and row.retry_at > now:
                continue
            owner = f"dispatch-{uuid.uuid4().hex[:12]}"
            free = Q(lease_owner="") | Q(lease_until__lt=now)
            if InboundCursor.objects.filter(free, pk=row.pk).update(lease_owner=owner, lease_until=now + POLL_LEASE):
                claimed.append((connection.pk, object_type, owner))
    return claimed


def capture(
    *,
    connection: Connection,
    connector: Connector,
    changes: Sequence[Change],
    targets: list[str] | None = None,
    id_prefix: str = "",
    lane: Lane = Lane.LIVE,
) -> Counter[str]:
    """Turn one page of changes into events (with their jobs) and links; our own writes read back are echoes.

    `targets` names the connections the events go to (None: the rules decide); `id_prefix` gives
    the events ids of their own, so a backfill or a reconcile re-sends a change already captured; `lane`: a
    backfill's or a reconcile's jobs wait behind live changes at their targets.
    """
    counts = Counter[str]()
    items: list[EventInput] = []
    missing = next((c for c in changes if not c.external_id), None)
    if missing is not None:  # a record we could never link or update: refuse the page, keep the cursor
        raise ConnectorError(
            f"a {missing.object_type} change from {connection.name} has no id: nothing in this page was captured",
            code="MISSING_KEY",
            permanent=True,
            fields=("id",),
        )
    ids = [id_prefix + _event_id(connection, change) for change in changes]
    last = {event_id: index for index, event_id in enumerate(ids)}
    seen = set(
        SyncEvent.objects.filter(idempotency_key__in=[f"event:{i}" for i in ids]).values_list(
            "idempotency_key", flat=True
        )
    )
    links = {
        (link.external_object, link.external_id): link
        for link in RecordLink.objects.filter(
            system=connection, external_id__in={change.external_id for change in changes}
        )
    }
    in_flight = InFlight(connection)
    new_links: dict[tuple[str, str], RecordLink] = {}
    for index, (change, event_id) in enumerate(zip(changes, ids, strict=True)):
        if f"event:{event_id}" in seen or last[event_id] != index:
            # The overlap window, a page read again after a crash, or a key repeated in this page
            # at the same time: the last copy in the page is the one kept (the last value wins).
            counts["already_captured"] += 1
            continue
        view = connector.inbound(change)
        link = links.get((change.object_type, change.external_id))
        # Events carry the CRM's own object name, so rules match on it (e.g. "Contact");
        # the record keeps System A's id through the link.
        object_type = change.object_type
        record_id = link.record_id if link else (view.record_id or f"{connection.name}-{change.external_id}")
        echo = None if change.deleted else echo_reason(link, view)
        if not change.deleted and echo is None:
            sender = in_flight.echo(link, view)
            if sender is not None:  # recorded under the record whose write it echoes
                echo, record_id = "echo: the values a write in flight to this connection is sending", sender.record_id
        if not change.deleted and not echo:
            # An echo leaves links to the engine: read while our push was in flight, the record has
            # no link yet, and one made here would claim the push's state was already synced.
            # The first capture links the CRM record to its System A id (the first change of a record in
            # the page does). Its last-synced values are left alone: they change only when a change has
            # reached the other side (the engine writes them), so they stay the base a conflict is judged
            # against while this change is on its way.
            new_links.setdefault(
                (change.object_type, change.external_id),
                RecordLink(
                    system=connection,
                    external_object=change.object_type,
                    external_id=change.external_id,
                    object_type=object_type,
                    record_id=record_id,
                    last_values={},
                    synced_at=None,
                ),
            )
        counts["echo" if echo else "captured"] += 1
        items.append(
            _event(
                connection,
                change,
                object_type,
                record_id,
                view,
                event_id,
                echo,
                linked=link is not None,
                targets=targets,
            )
        )
    # One statement for the page's new links, not two or three a record; a link another process made
    # meanwhile is kept as it is (get_or_create's answer, without its savepoint per record).
    RecordLink.objects.bulk_create([link for key, link in new_links.items() if key not in links], ignore_conflicts=True)
    if items:
        # The webhook's request id, or the poll's own: the change's journey back to System A carries it.
        event_ingest(items=items, idempotency_key=None, is_batch=True, request_id=request_id_var.get(), lane=lane)
    if counts["echo"]:
        ECHOES.labels(connection.name).inc(counts["echo"])
    return counts


def _event_id(connection: Connection, change: Change) -> str:
    """(connection, object, id, modified time) and a digest of the values: CRMs stamp whole seconds, so a
    second edit within the same second has the same time but other values, and is a change of its own;
    the same values read again (an overlap, a page re-read after a crash) are the same event."""
    moment = change.modified_at.isoformat()
    return f"{connection.name}:{change.object_type}:{change.external_id}@{moment}#{change_digest(change)}"


def change_digest(change: Change) -> str:
    """The values a change carries, in 16 hex digits: what tells two edits within one second apart."""
    return hashlib.sha256(json.dumps(change.fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def echo_reason(link: RecordLink | None, view: Inbound) -> str | None:
    """Our own write read back: compared field by field with what the link says we last synced
    (a hash of the raw record never matches: the target adds its own fields)."""
    if view.written_by_us:
        return "echo: last modified by this service's integration user"
    if link is None or not link.last_values:
        return None
    known = link.last_values
    for name, value in view.fields.items():
        if name in known:
            if _same(known[name], value):
                continue
            return None
        if value not in (None, "", [], False):
            # A field we never synced now holds a value: someone else changed the record. (An unset flag
            # reads false: some CRMs show every flag of every record, set or not.)
            return None
    return "echo: the record holds exactly what was last synced"


# In-flight jobs looked at for one delivery, at most (a connection has few batches out at once).
IN_FLIGHT_SCAN = 2000


def in_flight_echo(connection: Connection, link: RecordLink | None, view: Inbound) -> SyncJob | None:
    """Our write on its way back before its call has even returned: a CRM may call its webhooks
    before it answers the API call that caused them, so neither the link nor its values exist
    yet. The change is an echo when a job in flight to this connection is sending exactly these
    values; that job is returned."""
    values = _set_values(view)
    if not values:
        return None
    jobs = _in_flight(connection)
    if link is not None:
        jobs = jobs.filter(record_id=link.record_id)
    return next((job for job in jobs[:IN_FLIGHT_SCAN] if _sends(job, connection, values)), None)


class InFlight:
    """in_flight_echo for a page of changes: the connection's jobs in flight read once, when the first
    change needs them, instead of once a change (a page of 2,000 changes asked 2,000 times). With more
    than IN_FLIGHT_SCAN in flight, each change asks on its own, so that a link still narrows the search
    to its record."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.sending: list[tuple[SyncJob, dict[str, Any]]] | None = None  # each job and what it sends

    def echo(self, link: RecordLink | None, view: Inbound) -> SyncJob | None:
        values = _set_values(view)
        if not values:
            return None
        if self.sending is None:
            jobs = list(_in_flight(self.connection)[: IN_FLIGHT_SCAN + 1])
            self.sending = [(job, _sending(job, self.connection)) for job in jobs]
        if len(self.sending) > IN_FLIGHT_SCAN:
            return in_flight_echo(self.connection, link, view)
        for job, sending in self.sending:
            if (link is None or job.record_id == link.record_id) and _matches(sending, values):
                return job
        return None


def _set_values(view: Inbound) -> dict[str, Any]:
    return {k: v for k, v in view.fields.items() if v not in (None, "", [])}


def _in_flight(connection: Connection) -> QuerySet[SyncJob]:
    return SyncJob.objects.filter(target=connection, state=JobState.IN_FLIGHT).select_related("last_event")


def _sends(job: SyncJob, connection: Connection, values: Mapping[str, Any]) -> bool:
    return _matches(_sending(job, connection), values)


def _matches(sending: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    return bool(sending) and all(_same(sending.get(name), value) for name, value in values.items())


def _sending(job: SyncJob, connection: Connection) -> dict[str, Any]:
    event = job.last_event
    if event is None:
        return {}
    spec = target_payload(event.routing, connection.name)
    return dict(spec.get("fields") or {}) if spec else dict(event.payload or {})


def _same(left: Any, right: Any) -> bool:
    return left == right or (left in (None, "") and right in (None, ""))


def _event(
    connection: Connection,
    change: Change,
    object_type: str,
    record_id: str,
    view: Inbound,
    event_id: str,
    echo: str | None,
    *,
    linked: bool,
    targets: list[str] | None = None,
) -> EventInput:
    operation = "delete" if change.deleted else ("update" if linked else "create")
    # A new record's empty fields are noise; in an update an empty field may be a value someone cleared.
    data = None if change.deleted else {k: v for k, v in view.fields.items() if linked or v not in (None, "")}
    raw = {
        "operation": operation,
        "record_id": record_id,
        "object_type": object_type,
        "source": connection.name,
        "data": data,
        "occurred_at": change.modified_at.isoformat(),
    }
    return EventInput(
        operation=operation,
        record_id=record_id,
        object_type=object_type,
        source=connection.name,
        targets=targets,
        data=data,
        occurred_at=change.modified_at,
        event_id=event_id,
        raw=raw,
        skip_reason=echo,
    )


@dataclass(frozen=True)
class WebhookResult:
    counts: Counter[str]
    answer: tuple[str, bytes] | None  # what the sender expects back (e.g. a SOAP Ack); None: JSON counts


def webhook_receive(
    *, name: str, body: bytes, headers: Mapping[str, str], query: Mapping[str, str] | None = None, uri: str = ""
) -> WebhookResult:
    """Verify one webhook delivery for the connection `name` and capture its changes.

    Stored before the answer (a CRM may never resend a delivery it got a 4xx/5xx for: a later
    poll or reconcile is what catches one lost anyway). Raises NotFound for an unknown
    connection, WebhookRefused when the signature does not verify.
    """
    connection = Connection.objects.filter(name=name, enabled=True).first()
    if connection is None:
        raise NotFound(f"No enabled connection named '{name}'.")
    connector = connector_for(connection)
    changes = connector.webhook_changes(body, headers, timezone.now(), query or {}, uri=uri)
    with transaction.atomic():
        counts = capture(connection=connection, connector=connector, changes=changes)
    return WebhookResult(counts, connector.webhook_answer(counts))


def read_run(*, event_id: str, now: datetime | None = None) -> dict[str, str]:
    """Carry out one read event (sync/ingest/reads.py planned it): read each linked system, capture what it holds,
    as a poll would. Safe to run twice:
    a row already read is left alone, and a capture of a state already captured adds nothing."""
    outcomes: dict[str, str] = {}
    waiting = RecordRead.objects.filter(event_id=uuid.UUID(event_id), read_at__isnull=True)
    for row in waiting.select_related("connection"):
        connector = throttled_connector(row.connection, lane=Lane.READ)
        when = now or timezone.now()
        try:
            found = connector.read(row.external_object, [row.external_id]).get(row.external_id)
        except ConnectorError as exc:
            _read_finish(row, "error", when, f"{exc.code}: {exc.message}")
            outcomes[row.connection.name] = "error"
            continue
        if found is None:
            missing = f"{row.external_object} {row.external_id} is not in {row.connection.name}"
            _read_finish(row, "not_found", when, missing)
            outcomes[row.connection.name] = "not_found"
            continue
        change = Change(row.external_object, row.external_id, found, connector.modified_at(found) or when)
        counts = capture(connection=row.connection, connector=connector, changes=[change])
        outcome = next(iter(counts), "already_captured")
        _read_finish(row, outcome, when, "")
        outcomes[row.connection.name] = outcome
    logger.info("read done", extra={"event_id": event_id, "outcomes": outcomes})
    return outcomes


def _read_finish(row: RecordRead, outcome: str, when: datetime, error: str) -> None:
    RecordRead.objects.filter(pk=row.pk, read_at__isnull=True).update(outcome=outcome, read_at=when, error=error)
