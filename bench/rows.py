"""The SyncEvent-shaped row both baselines insert, built the way the app builds it.

Same columns and similar sizes (payload, routing and the stored answer), so a baseline
writes as many bytes per event as the app's event row does.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

# The app's default routing for a system_a event with the demo connections.
TARGETS = ["hubspot", "outreach", "salesforce"]

EVENT_COLUMNS = (
    "id, idempotency_key, request_hash, source, operation, object_type, record_id, "
    "payload, occurred_at, received_at, request_id, routing, response"
)
# %s placeholders: psycopg and Django's cursor both take them; JSON goes in as text and is cast.
INSERT_EVENT_SQL = (
    f"INSERT INTO sync_syncevent ({EVENT_COLUMNS}) "  # noqa: S608 - constant table and columns
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s::jsonb)"
)
INSERT_JOB_SQL = (
    "INSERT INTO sync_syncjob (source, object_type, record_id, target_id, state, attempts, version, "
    "last_event_id, last_occurred_at, created_at, updated_at, last_error_code, last_error_message, lease_owner, "
    "lane) VALUES (%s, %s, %s, %s, 'pending', 0, 1, %s, %s, %s, %s, '', '', '', 0)"
)


def sample_event(record_id: str) -> dict[str, Any]:
    """The event every phase sends: a create of one contact."""
    return {
        "operation": "create",
        "record_id": record_id,
        "object_type": "contact",
        "data": {"email": f"{record_id}@example.com"},
    }


def event_row(item: dict[str, Any], request_id: str) -> tuple[Any, ...]:
    """One sync_syncevent row for `item`, in EVENT_COLUMNS order."""
    event_id = uuid.uuid4()
    now = datetime.now(UTC)
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    routing = {"mode": "default", "targets": TARGETS}
    answer = {
        "event_id": str(event_id),
        "record_id": item["record_id"],
        "object_type": item["object_type"],
        "source": "system_a",
        "operation": item["operation"],
        "jobs": [{"target": name, "state": "pending"} for name in TARGETS],
        "routing": routing,
        "status_url": f"/v1/sync/status/{item['record_id']}?object_type={item['object_type']}&source=system_a",
    }
    return (
        event_id,
        f"auto:{uuid.uuid4()}",
        digest,
        "system_a",
        item["operation"],
        item["object_type"],
        item["record_id"],
        json.dumps(item.get("data")),
        now,
        now,
        request_id,
        json.dumps(routing),
        json.dumps(answer),
    )


def job_rows(event: tuple[Any, ...], target_ids: list[int]) -> list[tuple[Any, ...]]:
    """The app's job rows for one event row: one per target, in INSERT_JOB_SQL order."""
    event_id, now, record_id, object_type = event[0], event[9], event[6], event[5]
    return [("system_a", object_type, record_id, target, event_id, now, now, now) for target in target_ids]
