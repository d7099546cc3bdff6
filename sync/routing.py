"""Which connections an event goes to when no rule set decides (and the checks of targets a caller names).

The decision is stored with the event, so "why did this go there?" always has an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crms.models import Connection
from rules.contracts import Routing


@dataclass(frozen=True)
class Route:
    targets: list[Connection]
    decision: Routing
    errors: dict[str, str] = field(default_factory=dict)


def route_event(
    *, operation: str, source: str, requested: list[str] | None, connections: dict[str, Connection]
) -> Route:
    """`connections` holds every connection by name, enabled or not."""
    if operation == "read":  # reads go to the record's linked systems (sync.reads), never to a target
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
