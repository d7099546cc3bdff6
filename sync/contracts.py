"""Names and shapes the sync layers share: what goes into ingest, and the internal system's name.

Depends on nothing in `sync`, so that every layer can use it without importing another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rules.contracts import Routing

# The connection name of the internal system every CRM syncs with (docs/system-a.md).
SYSTEM_A = "system_a"


@dataclass(frozen=True)
class EventInput:
    """One change to store, from the API, a capture, a backfill or a conflict's decision."""

    operation: str
    record_id: str
    object_type: str
    source: str
    targets: list[str] | None
    data: dict[str, Any] | None
    occurred_at: datetime | None
    event_id: str | None
    raw: Any  # the item exactly as sent, hashed to tell a replay from a reused key
    skip_reason: str | None = None  # recorded, routed nowhere (an inbound echo of our own write)
    routing: Routing | None = None  # decided already (a conflict's resolution): the rules are not asked
    conflict_resolution: bool = False  # carries a conflict's decision: not judged again
