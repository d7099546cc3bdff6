"""Salesforce answers turned into the connector's values: per-record results, changes, times, field problems."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from crms.base import (
    Change,
    OutboundRecord,
    PushResult,
)
from crms.salesforce import errors

# The field types an external-id key may have: System A's ids are text.
KEY_TYPES = frozenset({"string", "email"})


def field_problems(object_type: str, wanted: list[str], described: dict[str, Any], key_field: str) -> list[str]:
    by_name = {str(f.get("name", "")).lower(): f for f in described.get("fields", [])}
    problems = [f"{object_type} has no field {name}" for name in wanted if name.lower() not in by_name]
    key = by_name.get(key_field.lower())
    if key is None:
        problems.append(f"{object_type} has no field {key_field}: create it as External ID, Unique")
    elif not (key.get("externalId") and key.get("unique")):
        problems.append(f"{key_field} must be marked External ID and Unique")
    elif key.get("type") not in KEY_TYPES:
        problems.append(f"{key_field} is of type {key.get('type')}: System A's ids need a Text field")
    return problems


def upsert_result(record: OutboundRecord, row: dict[str, Any]) -> PushResult:
    if not row.get("success"):
        return PushResult(record.record_id, "error", error=errors.record_error(row.get("errors") or []))
    return PushResult(record.record_id, "created" if row.get("created") else "updated", external_id=row.get("id"))


def update_result(record: OutboundRecord, row: dict[str, Any]) -> PushResult:
    if not row.get("success"):
        return PushResult(record.record_id, "error", record.external_id, errors.record_error(row.get("errors") or []))
    return PushResult(record.record_id, "updated", external_id=row.get("id") or record.external_id)


def delete_result(record: OutboundRecord, row: dict[str, Any]) -> PushResult:
    if row.get("success"):
        return PushResult(record.record_id, "deleted", external_id=row.get("id"))
    error = errors.record_error(row.get("errors") or [])
    if error.code == "ENTITY_IS_DELETED":  # already gone: the goal is met
        return PushResult(record.record_id, "deleted", external_id=record.external_id)
    return PushResult(record.record_id, "error", external_id=record.external_id, error=error)


def change_from(object_type: str, row: dict[str, Any]) -> Change:
    return Change(object_type, row["Id"], clean(row), parse_time(row["SystemModstamp"]))


def clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "attributes"}


def iso_z(value: str) -> datetime:
    """A SOQL datetime (`2024-01-31T12:00:00Z`) or Salesforce's own (`…00.000+0000`) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_time(value: str) -> datetime:
    """Salesforce writes `2013-05-20T20:49:32.000+0000` (no colon in the offset)."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
