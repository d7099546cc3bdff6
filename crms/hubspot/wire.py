"""HubSpot's wire format, in small pure functions: search bodies, batch answers, times, webhook events."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from crms.base import ConnectorError, OutboundRecord, Outcome, PushResult
from crms.hubspot.errors import item_error
from crms.hubspot.objects import ObjectMap

SEARCH_CAP = 10_000  # "limited to 10,000 total results for any given query"; past it, a 400
# The characters HubSpot decodes in the URI before signing (v3); nothing else is decoded.
_SIGNED_DECODES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_ENCODED = re.compile("|".join(_SIGNED_DECODES), re.IGNORECASE)
# Webhook subscription prefixes and generic objectTypeIds, by HubSpot object.
SUBSCRIPTION_OBJECTS = {"contact": "contacts", "company": "companies", "deal": "deals", "ticket": "tickets"}
OBJECT_TYPE_IDS = {"0-1": "contacts", "0-2": "companies", "0-3": "deals", "0-5": "tickets"}
DELETIONS = frozenset({"deletion", "privacyDeletion"})
CHANGES = frozenset({"creation", "propertyChange", "restore", "merge", "associationChange"})


def parse_time(value: str) -> datetime:
    """HubSpot's times: ISO 8601 (`2019-10-30T03:30:17.883Z`) in answers, epoch milliseconds in some values."""
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def epoch_ms(value: str) -> str:
    """An ISO instant as the epoch milliseconds HubSpot's search filters take."""
    return str(int(parse_time(value).timestamp() * 1000))


def row_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return dict(row.get("properties") or {})


def search_body(mapping: ObjectMap, since: str, after: int, limit: int) -> dict[str, Any]:
    stamp = mapping.modified_property
    return {
        "filterGroups": [{"filters": [{"propertyName": stamp, "operator": "GTE", "value": epoch_ms(since)}]}],
        "sorts": [{"propertyName": stamp, "direction": "ASCENDING"}],
        "properties": mapping.wanted(),
        "limit": limit,
        "after": str(after),
    }


def signature_base(method: str, uri: str, body: bytes, timestamp: str) -> bytes:
    decoded = _ENCODED.sub(lambda m: _SIGNED_DECODES[m.group(0).upper()], uri)
    return method.encode() + decoded.encode() + body + timestamp.encode()


def batch_outcomes(
    body: Mapping[str, Any], mapping: ObjectMap, part: Sequence[tuple[int, OutboundRecord]], write: str
) -> dict[int, PushResult]:
    """Each input's result or error, tied back by objectWriteTraceId (we send the input's index), else by its key."""
    records = dict(part)
    by_key = {_key(mapping, write, record): index for index, record in part}
    found: dict[int, PushResult] = {}
    for row in body.get("results") or []:
        index = _index_of(row, by_key, mapping, write)
        if index is None or index not in records:
            continue
        outcome: Outcome = "created" if write == "upsert" and row.get("new") else "updated"
        found[index] = PushResult(records[index].record_id, outcome, external_id=str(row["id"]))
    for item in body.get("errors") or []:
        error = item_error(item)
        for index in _error_indexes(item, by_key):
            if index in records and index not in found:
                found[index] = PushResult(records[index].record_id, "error", records[index].external_id, error)
    for index, record in part:
        if index not in found:
            unanswered = ConnectorError(
                "HubSpot's answer named neither a result nor an error for this record", code="NO_RESULT"
            )
            found[index] = PushResult(record.record_id, "error", record.external_id, unanswered)
    return found


def _key(mapping: ObjectMap, write: str, record: OutboundRecord) -> str:
    value = record.external_id if write == "update" else mapping.match_value(record)
    return str(value or "").lower()  # HubSpot keeps emails in lower case


def _index_of(row: Mapping[str, Any], by_key: Mapping[str, int], mapping: ObjectMap, write: str) -> int | None:
    trace = str(row.get("objectWriteTraceId") or "")
    if trace.isdigit():
        return int(trace)
    key = str(row.get("id") if write == "update" else row_fields(row).get(mapping.id_property) or "")
    return by_key.get(key.lower())


def _error_indexes(item: Mapping[str, Any], by_key: Mapping[str, int]) -> list[int]:
    context = item.get("context") or {}
    traces = [int(t) for t in context.get("objectWriteTraceId") or [] if str(t).isdigit()]
    if traces:
        return traces
    keys = [*(context.get("ids") or []), *(context.get("id") or [])]
    return [by_key[str(k).lower()] for k in keys if str(k).lower() in by_key]


@dataclass
class Events:
    """A delivery's events, the latest per record: records to read now, and records deleted."""

    changed: dict[str, set[str]] = field(default_factory=dict)  # our object name -> HubSpot ids
    occurred: dict[tuple[str, str], datetime] = field(default_factory=dict)
    deleted: dict[tuple[str, str], datetime] = field(default_factory=dict)


def webhook_events(payload: Any, objects: Mapping[str, ObjectMap]) -> Events:
    """HubSpot posts an array of events (under 100). Order is not guaranteed, and duplicates happen: the
    latest `occurredAt` per record decides. Events of objects this connection does not map are ignored."""
    if not isinstance(payload, list):
        raise TypeError("the body is not an array of events")
    ours = {mapping.object: name for name, mapping in objects.items()}
    latest: dict[tuple[str, str], tuple[datetime, bool]] = {}
    for event in payload:
        prefix, _, action = str(event["subscriptionType"]).partition(".")
        hubspot_object = OBJECT_TYPE_IDS.get(str(event.get("objectTypeId")), str(event.get("objectTypeId") or ""))
        name = ours.get(SUBSCRIPTION_OBJECTS.get(prefix, "") if prefix != "object" else hubspot_object)
        if name is None or action not in DELETIONS | CHANGES:
            continue
        key = (name, str(event["objectId"]))
        when = datetime.fromtimestamp(int(event["occurredAt"]) / 1000, UTC)
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, action in DELETIONS)
    events = Events()
    for (name, record_id), (when, deleted) in latest.items():
        if deleted:
            events.deleted[(name, record_id)] = when
        else:
            events.changed.setdefault(name, set()).add(record_id)
            events.occurred[(name, record_id)] = when
    return events
