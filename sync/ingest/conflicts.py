"""Conflicts: System A and a CRM both changed one record since its last sync.

Detected when an event arrives while the other side's change for the same record is still on
its way (its job not yet synced): the two changes are compared field by field, in the CRM's
field names, against the values the record link says both sides last agreed on. The policy of
the rule that writes to the CRM (else the connection's `conflict` config, else last writer wins)
decides; `hold` parks both jobs for a person to decide in the admin. Either way the decision is
a `SyncConflict` row, and it is carried out with two ordinary events: the chosen values go to
the CRM, and the chosen record (in the CRM's names, mapped by the rules) goes to System A. A side
that already holds the chosen state has its waiting job skipped instead, with the reason.

Pairs are System A and one CRM: a rule that copies one CRM straight into another is not judged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from crms.models import Connection
from recordsync.metrics import CONFLICTS
from rules.contracts import Routing, target_payload
from sync import transitions
from sync.contracts import SYSTEM_A, EventInput
from sync.models import ConflictState, JobState, RecordLink, SyncConflict, SyncEvent, SyncJob

if TYPE_CHECKING:
    from sync.ingest.routing import Route

logger = logging.getLogger("recordsync.conflicts")

POLICIES = ("last_writer_wins", "system_a_wins", "crm_wins", "field_merge", "hold")
FALLBACKS = ("last_writer_wins", "system_a_wins", "crm_wins", "hold")
UNSYNCED = (JobState.PENDING, JobState.RETRYING, JobState.IN_FLIGHT, JobState.HELD)
# On its way: a claimed job is still pending, and a settled one is not started (transitions.start).
ACTIVE = (JobState.IN_FLIGHT,)

Side = Literal["system_a", "crm"]


@dataclass(frozen=True)
class Pair:
    """The two changes of one record: System A's (as it would be written to the CRM) and the CRM's."""

    record_id: str
    crm: Connection
    a_event: SyncEvent
    crm_event: SyncEvent


@dataclass
class Resolution:
    """A decision carried out but for what ingest must store: `items` (the chosen state for each side that
    lacks it), then `release()`, which lets the jobs a person held wait for those items' state."""

    conflict: SyncConflict
    items: list[EventInput]
    held: list[QuerySet[SyncJob]]
    now: datetime

    def release(self) -> None:
        for jobs in self.held:  # a held job keeps its state through an upsert: release it to the chosen state
            transitions.unhold(jobs, now=self.now)
        self.conflict.refresh_from_db()
        logger.info(
            "conflict resolved",
            extra={
                "conflict_id": self.conflict.pk,
                "record_id": self.conflict.record_id,
                "resolved_by": self.conflict.resolved_by,
                "note": self.conflict.note,
            },
        )


def detect(
    checked: Sequence[tuple[SyncEvent, Route]], connections: dict[str, Connection], now: datetime
) -> list[Resolution]:
    """Judge every pair these new events form with a change still travelling the other way. Conflicts a policy
    decides come back as resolutions for the caller's ingest to store; held ones wait for a person."""
    system_a = connections.get(SYSTEM_A)
    if system_a is None or not checked:
        return []
    judged = (_judge(pair, system_a, now) for pair in _pairs(checked, system_a, connections))
    return [resolution for resolution in judged if resolution is not None]


def _pairs(
    checked: Sequence[tuple[SyncEvent, Route]], system_a: Connection, connections: dict[str, Connection]
) -> list[Pair]:
    from_a = [(e, r) for e, r in checked if e.source == SYSTEM_A and e.operation in ("create", "update") and r.targets]
    from_crm = [
        (e, r)
        for e, r in checked
        if e.source != SYSTEM_A and e.operation in ("create", "update") and system_a in r.targets
    ]
    pairs: list[Pair] = []
    if from_a:
        waiting = SyncJob.objects.filter(
            record_id__in={e.record_id for e, _ in from_a}, target=system_a, state__in=UNSYNCED
        ).select_related("last_event")
        by_key = {(job.record_id, job.source): job for job in waiting}
        for event, route in from_a:
            for target in route.targets:
                job = by_key.get((event.record_id, target.name))
                if job is not None and job.last_event is not None and job.last_event.operation != "delete":
                    pairs.append(Pair(event.record_id, target, event, job.last_event))
    if from_crm:
        crms = {connections[e.source].pk: connections[e.source] for e, _ in from_crm if e.source in connections}
        records = {e.record_id for e, _ in from_crm}
        waiting = SyncJob.objects.filter(
            record_id__in=records, source=SYSTEM_A, target_id__in=crms, state__in=UNSYNCED
        ).select_related("last_event")
        by_target = {(job.record_id, job.target_id): job for job in waiting}
        for event, _ in from_crm:
            crm = connections.get(event.source)
            job = by_target.get((event.record_id, crm.pk)) if crm else None
            if crm and job is not None and job.last_event is not None and job.last_event.operation != "delete":
                pairs.append(Pair(event.record_id, crm, job.last_event, event))
    return pairs


def a_values_for(pair: Pair) -> dict[str, Any]:
    """System A's change as it would be written to the CRM: the rule's mapped payload, else the data as sent."""
    spec = target_payload(pair.a_event.routing, pair.crm.name)
    return dict(spec.get("fields") or {}) if spec else dict(pair.a_event.payload or {})


def _spec(pair: Pair) -> dict[str, Any]:
    return dict(target_payload(pair.a_event.routing, pair.crm.name) or {})


def _judge(pair: Pair, system_a: Connection, now: datetime) -> Resolution | None:
    link = RecordLink.objects.filter(record_id=pair.record_id, system=pair.crm).first()
    if link is None:
        return None  # never synced with this CRM: there is no common base to judge against
    base, ours, theirs = dict(link.last_values), a_values_for(pair), dict(pair.crm_event.payload or {})
    a_changed = {f for f in ours if not _same(ours[f], base.get(f))}
    crm_changed = {f for f in ours if f in theirs and not _same(theirs[f], base.get(f))}
    if not a_changed or not crm_changed:
        return None  # only one side changed what System A writes: an ordinary update
    if all(_same(ours[f], theirs.get(f)) for f in a_changed | crm_changed):
        return None  # both made the same change
    contested = sorted(f for f in a_changed & crm_changed if not _same(ours[f], theirs[f]))
    spec = _spec(pair)
    policy = spec.get("conflict") or pair.crm.config.get("conflict") or "last_writer_wins"
    fallback = spec.get("merge_fallback") or pair.crm.config.get("merge_fallback") or "last_writer_wins"
    choices = _choose(policy, fallback, ours, a_changed, crm_changed, contested, pair)
    conflict = _record(pair, link, policy, base, ours, theirs, contested, now)
    CONFLICTS.labels(pair.crm.name, policy).inc()
    if choices is None:
        _hold(conflict, system_a)
        return None
    return decide(conflict, choices, by=f"policy:{policy}", note=_note(choices), system_a=system_a, now=now)


def _choose(
    policy: str,
    fallback: str,
    ours: dict[str, Any],
    a_changed: set[str],
    crm_changed: set[str],
    contested: list[str],
    pair: Pair,
) -> dict[str, Side] | None:
    """Which side each field System A writes is taken from; None: hold for a person."""
    if policy == "field_merge":
        if contested and fallback == "hold":
            return None
        loser_fallback = _winner(fallback, pair)
        choices: dict[str, Side] = {}
        for name in ours:
            if name in a_changed and name not in crm_changed:
                choices[name] = "system_a"
            elif name in crm_changed and name not in a_changed:
                choices[name] = "crm"
            elif name in contested:
                choices[name] = loser_fallback or "system_a"
            else:
                choices[name] = "crm"  # unchanged, or changed alike on both sides
        return choices
    winner = _winner(policy, pair)
    return None if winner is None else dict.fromkeys(ours, winner)


def _winner(policy: str, pair: Pair) -> Side | None:
    if policy == "system_a_wins":
        return "system_a"
    if policy == "crm_wins":
        return "crm"
    if policy == "hold":
        return None
    # Last writer wins by the time each side says the change was made; a tie goes to System A.
    return "crm" if pair.crm_event.occurred_at > pair.a_event.occurred_at else "system_a"


def _note(choices: dict[str, Side]) -> str:
    sides = set(choices.values())
    if sides == {"crm"}:
        return "the CRM's version kept"
    if sides == {"system_a"}:
        return "System A's version kept"
    return "merged: " + ", ".join(f"{name} from {side}" for name, side in sorted(choices.items()))


def _record(
    pair: Pair,
    link: RecordLink,
    policy: str,
    base: dict[str, Any],
    ours: dict[str, Any],
    theirs: dict[str, Any],
    contested: list[str],
    now: datetime,
) -> SyncConflict:
    """One row per conflict. A record already held gets its open conflict refreshed with the newer changes."""
    values: dict[str, Any] = {
        "object_type": pair.a_event.object_type,
        "external_object": link.external_object,
        "external_id": link.external_id,
        "policy": policy,
        "base": base,
        "system_a_values": ours,
        "crm_values": theirs,
        "fields": contested,
        "system_a_event": pair.a_event,
        "crm_event": pair.crm_event,
        "system_a_occurred_at": pair.a_event.occurred_at,
        "crm_occurred_at": pair.crm_event.occurred_at,
    }
    open_row = SyncConflict.objects.select_for_update().filter(
        record_id=pair.record_id, connection=pair.crm, state=ConflictState.OPEN
    )
    updated = open_row.update(**values)
    if updated:
        return open_row.get()
    try:
        with transaction.atomic():
            conflict = SyncConflict.objects.create(
                record_id=pair.record_id, connection=pair.crm, detected_at=now, **values
            )
    except IntegrityError:  # another request opened it a moment ago
        open_row.update(**values)
        return open_row.get()
    logger.info(
        "conflict detected",
        extra={
            "conflict_id": conflict.pk,
            "record_id": pair.record_id,
            "connection": pair.crm.name,
            "policy": policy,
            "fields": contested,
        },
    )
    return conflict


def _jobs(conflict: SyncConflict, system_a: Connection) -> tuple[QuerySet[SyncJob], QuerySet[SyncJob]]:
    to_crm = SyncJob.objects.filter(record_id=conflict.record_id, source=SYSTEM_A, target=conflict.connection)
    to_a = SyncJob.objects.filter(record_id=conflict.record_id, source=conflict.connection.name, target=system_a)
    return to_crm, to_a


def _hold(conflict: SyncConflict, system_a: Connection) -> None:
    """Both directions wait for a person. A job already on its way finishes; the resolution overrides it."""
    for jobs in _jobs(conflict, system_a):
        transitions.hold(
            jobs, code="CONFLICT_HELD", message=f"conflict {conflict.pk} waits for review", now=timezone.now()
        )
    logger.info("conflict held", extra={"conflict_id": conflict.pk, "record_id": conflict.record_id})


def decide(
    conflict: SyncConflict,
    choices: dict[str, Side],
    *,
    by: str,
    note: str = "",
    system_a: Connection | None = None,
    now: datetime | None = None,
) -> Resolution:
    """A decision, each field System A writes taken from one side, so that both sides end with the same state.

    The CRM is to get the chosen values unless it already holds them; System A the chosen record (in the CRM's
    names, mapped by the rules like any change from that CRM) unless it already holds it. A job already on its
    way is always followed by the chosen state. The conflict is marked resolved and a side that holds the state
    has its job settled here; the events to store come back in the resolution (services.conflict_resolve, or
    the ingest that detected the conflict, stores them in its own transaction).
    """
    now = now or timezone.now()
    system_a = system_a or Connection.objects.get(name=SYSTEM_A)
    ours, theirs = dict(conflict.system_a_values), dict(conflict.crm_values)
    chosen = {
        name: (ours[name] if choices.get(name, "crm") == "system_a" else theirs.get(name, ours[name])) for name in ours
    }
    full = {**theirs, **chosen}
    to_crm, to_a = _jobs(conflict, system_a)
    # The decision stands at the time of the newer of the two changes: a change older than that (a late
    # one, a backfill's replay of the losing version) is superseded; a newer one goes through.
    when = max((t for t in (conflict.system_a_occurred_at, conflict.crm_occurred_at) if t is not None), default=now)
    # The job from the CRM to System A orders the CRM's own stamps, which have whole seconds: it holds
    # the CRM change's time, so another edit made in the CRM in that same second still goes through.
    crm_when = conflict.crm_occurred_at or when
    items: list[EventInput] = []
    crm_holds_it = all(_same(chosen[name], theirs.get(name)) for name in chosen)
    if not crm_holds_it or to_crm.filter(state__in=ACTIVE).exists():
        items.append(_to_crm_event(conflict, chosen, when))
    else:
        _settle(
            to_crm, conflict, f"conflict {conflict.pk}: {conflict.connection.name} already holds the chosen state", when
        )
    a_holds_it = all(choices.get(name) == "system_a" for name in chosen) and _crm_changed_only(conflict) <= set(ours)
    if a_holds_it and not to_a.filter(state__in=ACTIVE).exists():
        _settle(to_a, conflict, f"conflict {conflict.pk}: System A already holds the chosen state", crm_when)
    elif all(choices.get(name, "crm") == "crm" for name in chosen) and conflict.crm_event is not None:
        transitions.unhold(to_a, now=now)
    else:
        items.append(_to_system_a_event(conflict, full, crm_when))
    SyncConflict.objects.filter(pk=conflict.pk).update(
        state=ConflictState.RESOLVED, resolution=chosen, resolved_by=by, note=note or _note(choices), resolved_at=now
    )
    return Resolution(conflict, items, [to_crm, to_a] if items else [], now)


def _crm_changed_only(conflict: SyncConflict) -> set[str]:
    """The CRM's changes, all fields: those System A does not write still have to reach it."""
    base = conflict.base
    return {name for name, value in conflict.crm_values.items() if not _same(value, base.get(name))}


def _settle(jobs: QuerySet[SyncJob], conflict: SyncConflict, message: str, when: datetime) -> None:
    """The side already holds the decision: its waiting job is skipped (transitions.settle)."""
    transitions.settle(jobs, code="CONFLICT_RESOLVED", message=message, decided_at=when, now=timezone.now())


def _to_crm_event(conflict: SyncConflict, chosen: dict[str, Any], when: datetime) -> EventInput:
    source = conflict.system_a_event
    routing: Routing = {
        "mode": "conflict",
        "conflict": conflict.pk,
        "targets": [conflict.connection.name],
        "payloads": {
            conflict.connection.name: {
                "object": conflict.external_object,
                "fields": chosen,
                "rule": f"conflict {conflict.pk}",
            }
        },
    }
    raw = {"conflict": conflict.pk, "to": conflict.connection.name, "fields": chosen}
    return EventInput(
        operation="update",
        record_id=conflict.record_id,
        object_type=conflict.object_type,
        source=SYSTEM_A,
        targets=None,
        data=dict(source.payload or {}) if source else None,
        occurred_at=when,
        event_id=f"conflict:{conflict.pk}:crm",
        raw=raw,
        routing=routing,
    )


def _to_system_a_event(conflict: SyncConflict, full: dict[str, Any], when: datetime) -> EventInput:
    crm_event = conflict.crm_event
    object_type = crm_event.object_type if crm_event else conflict.external_object
    raw = {"conflict": conflict.pk, "to": SYSTEM_A, "fields": full}
    return EventInput(
        operation="update",
        record_id=conflict.record_id,
        object_type=object_type,
        source=conflict.connection.name,
        targets=[SYSTEM_A],
        data=full,
        occurred_at=when,
        event_id=f"conflict:{conflict.pk}:system_a",
        raw=raw,
        conflict_resolution=True,
    )


def _same(left: Any, right: Any) -> bool:
    return left == right or (left in (None, "") and right in (None, ""))
