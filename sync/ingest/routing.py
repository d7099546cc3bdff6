"""Which connections an event goes to when no rule set decides (and the checks of targets a caller names).

The decision is stored with the event, so "why did this go there?" always has an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crms.models import Connection
from rules.contracts import Routing
from sync.contracts import EventInput
from sync.models import SyncEvent


@dataclass(frozen=True)
class Route:
    targets: list[Connection]
    decision: Routing
    errors: dict[str, str] = field(default_factory=dict)


def route_event(
    *, operation: str, source: str, requested: list[str] | None, connections: dict[str, Connection]
) -> Route:
    """`connections` holds every connection by name, enabled or not."""
    if operation == "read":  # reads go to the record's linked systems (sync.ingest.reads), never to a target
        return Route([], {"mode": "read", "targets": []})
    if requested is not None:
        return _explicit(source, requested, connections)
    targets = [c for name, c in sorted(connections.items()) if c.enabled and name != source]
    decision: Routing = {"mode": "default", "targets": [c.name for c in targets]}
    if not targets:
        decision["reason"] = "no enabled connection other than the source"
    return Route(targets, decision)


def _explicit(source: str, requested: list[str], connections: dict[str, Connection]) -> Route:
    errors: dict[str, str] = {}
    targets: list[Connection] = []
    for index, name in enumerate(requested):
        connection = connections.get(name)
        key = f"targets[{index}]"
        if connection is None:
            known = ", ".join(sorted(connections)) or "none configured"
            errors[key] = f"Unknown target '{name}'. Known connections: {known}."
        elif not connection.enabled:
            errors[key] = f"Connection '{name}' is disabled; enable it in the admin or leave it out."
        elif name == source:
            errors[key] = f"'{name}' is the event's source; a record is never synced back to where it came from."
        elif connection not in targets:
            targets.append(connection)
    return Route(targets, {"mode": "explicit", "targets": [c.name for c in targets]}, errors)


def changed_fields(items: Sequence[EventInput], indexes: list[int]) -> dict[int, list[str]]:
    """For each item, the fields whose value differs from the record's previous event (all of
    them for a record seen for the first time). Earlier items of the same batch count."""
    keys = {(items[i].source, items[i].object_type, items[i].record_id) for i in indexes}
    previous: dict[tuple[str, str, str], dict[str, Any]] = {}
    rows = SyncEvent.objects.filter(record_id__in={k[2] for k in keys}).order_by("received_at")
    for event in rows.only("source", "object_type", "record_id", "payload"):
        key = (event.source, event.object_type, event.record_id)
        if key in keys and event.payload is not None:
            previous[key] = event.payload
    changed: dict[int, list[str]] = {}
    for index in indexes:
        item = items[index]
        key = (item.source, item.object_type, item.record_id)
        before, now = previous.get(key, {}), item.data or {}
        changed[index] = sorted(name for name, value in now.items() if before.get(name, object()) != value)
        if item.data is not None:
            previous[key] = {**before, **now}
    return changed
