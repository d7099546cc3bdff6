from __future__ import annotations

from crms.models import Connection


def connections_enabled() -> dict[str, Connection]:
    return {c.name: c for c in Connection.objects.filter(enabled=True)}


def connection_names() -> set[str]:
    return set(Connection.objects.values_list("name", flat=True))
