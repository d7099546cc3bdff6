"""Read events: `"operation": "read"` asks for a refresh of one record from every system it is linked to.

Each linked system is read through its connector's `read` (throttled like any call); what comes
back enters as an ordinary captured change, so a newer state reaches System A through the rules
and the conflict policy, and a state already known is an echo or already captured. A read never
writes to a CRM. What was read, when, and what became of it is a `RecordRead` row, shown in status.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from crms.models import Connection
from crms.registry import UnknownKind, connector_class
from rules.contracts import Routing
from sync.models import RecordLink, RecordRead, SyncEvent

logger = logging.getLogger("recordsync.reads")


def read_routing(record_id: str, links: Sequence[RecordLink]) -> Routing:
    """The routing a read event is stored with: the systems it will read, or why there are none."""
    systems = sorted({link.system.name for link in links if _readable(link.system)})
    routing: Routing = {"mode": "read", "targets": [], "read_from": systems}
    if not systems:
        routing["reason"] = f"record {record_id} has no link to a system that can be read: nothing to refresh"
    return routing


def links_for_reads(record_ids: set[str]) -> dict[str, list[RecordLink]]:
    found: dict[str, list[RecordLink]] = {}
    for link in RecordLink.objects.filter(record_id__in=record_ids).select_related("system"):
        found.setdefault(link.record_id, []).append(link)
    return found


def _readable(connection: Connection) -> bool:
    if not connection.enabled:
        return False
    try:
        return "inbound" in connector_class(connection.kind).capabilities.directions
    except UnknownKind:
        return False


def reads_plan(event: SyncEvent) -> list[RecordRead]:
    """One waiting row per system to read, written with the event so the status shows them at once."""
    links = [
        link
        for link in RecordLink.objects.filter(record_id=event.record_id).select_related("system")
        if link.system.name in event.routing.get("read_from", [])
    ]
    rows = [
        RecordRead(
            event=event, connection=link.system, external_object=link.external_object, external_id=link.external_id
        )
        for link in links
    ]
    return RecordRead.objects.bulk_create(rows, ignore_conflicts=True)
