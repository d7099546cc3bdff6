from __future__ import annotations

import time
from typing import Any

from crms.models import Connection
from crms.registry import connector_class, kinds

# Every ingest routes over all connections: keep them for a moment instead of a query per request.
# Saving through crms.services clears this process's copy; other processes see a change within this.
CONNECTIONS_TTL_SECONDS = 2.0
clock = time.monotonic  # swappable in tests
_connections: tuple[float, dict[str, Connection]] = (float("-inf"), {})


def connections_by_name() -> dict[str, Connection]:
    global _connections
    loaded_at, found = _connections
    if clock() - loaded_at > CONNECTIONS_TTL_SECONDS:
        found = {c.name: c for c in Connection.objects.all()}
        _connections = (clock(), found)
    return found


def connections_forget() -> None:
    global _connections
    _connections = (float("-inf"), {})


def connections_enabled() -> dict[str, Connection]:
    return {c.name: c for c in Connection.objects.filter(enabled=True)}


def connection_names() -> set[str]:
    return set(Connection.objects.values_list("name", flat=True))


def kinds_available() -> list[dict[str, Any]]:
    """Every registered connector kind, with the connections configured for it."""
    configured: dict[str, list[dict[str, Any]]] = {}
    for connection in Connection.objects.order_by("name"):
        configured.setdefault(connection.kind, []).append({"name": connection.name, "enabled": connection.enabled})
    out = []
    for kind in kinds():
        cls = connector_class(kind)
        out.append(
            {
                "name": kind,
                "label": cls.label,
                "capabilities": {
                    "batch_size": cls.capabilities.batch_size,
                    "directions": list(cls.capabilities.directions),
                    "objects": sorted(cls.capabilities.objects),
                },
                "connections": configured.get(kind, []),
            }
        )
    return out


def kind_schema(kind: str) -> dict[str, Any]:
    return connector_class(kind).schema()
