"""The mock HubSpot account's properties and the shapes of its answers (HubSpot's CRM v3 OpenAPI specs).

Values are strings, as HubSpot keeps them; times are ISO 8601 with milliseconds and `Z`. Every object has
`hs_object_id`, `createdate` and its last-modified property, which HubSpot sets and no write may.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crms.mocks.models import MockRecord

SYSTEM = "hubspot"


@dataclass(frozen=True)
class Property:
    name: str
    type: str = "string"  # string, number, date, datetime, enumeration, bool
    field_type: str = "text"
    unique: bool = False
    read_only: bool = False

    def as_json(self, obj: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.name.replace("_", " ").title(),
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": f"{obj[:-1]}information",
            "description": "",
            "options": [],
            "hasUniqueValue": self.unique,
            "hidden": False,
            "modificationMetadata": {
                "archivable": not self.read_only,
                "readOnlyDefinition": True,
                "readOnlyValue": self.read_only,
            },
            "calculated": False,
            "hubspotDefined": self.name != "recordsync_id",
            "formField": not self.read_only,
            "archived": False,
        }


_BOOKKEEPING = (
    Property("hs_object_id", "number", "number", unique=True, read_only=True),
    Property("createdate", "datetime", "date", read_only=True),
)
OBJECTS: dict[str, dict[str, Property]] = {
    "contacts": {
        p.name: p
        for p in (
            *_BOOKKEEPING,
            Property("lastmodifieddate", "datetime", "date", read_only=True),
            Property("email", unique=True),
            Property("firstname"),
            Property("lastname"),
            Property("phone", field_type="phonenumber"),
            Property("company"),
            Property("jobtitle"),
            Property("lifecyclestage", "enumeration", "radio"),
        )
    },
    "companies": {
        p.name: p
        for p in (
            *_BOOKKEEPING,
            Property("hs_lastmodifieddate", "datetime", "date", read_only=True),
            Property("name"),
            Property("domain"),
            Property("phone", field_type="phonenumber"),
            Property("city"),
            Property("country"),
            Property("industry", "enumeration", "select"),
            # The account's custom property, made unique, that holds System A's id (docs/connectors.md).
            Property("recordsync_id", unique=True),
        )
    },
}
MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
DEFAULT_PROPERTIES = {
    "contacts": ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"],
    "companies": ["name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"],
}


def hs_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def values(record: MockRecord) -> dict[str, str | None]:
    """Every property the record holds, HubSpot's own included."""
    stamp = hs_time(record.modified_at)
    own = {"hs_object_id": record.record_id, "createdate": hs_time(record.created_at), MODIFIED[record.object]: stamp}
    return {**record.fields, **own}


def public_object(record: MockRecord, wanted: list[str] | None, *, trace: str | None = None) -> dict[str, Any]:
    """SimplePublicObject: the properties asked for (null when defined but unset; an undefined one is left out),
    and always the id, the creation and the last-modified stamps."""
    held = values(record)
    names = wanted or DEFAULT_PROPERTIES[record.object]
    known = OBJECTS[record.object]
    properties = {n: held.get(n) for n in names if n in known}
    properties |= {n: held[n] for n in ("hs_object_id", "createdate", MODIFIED[record.object])}
    body: dict[str, Any] = {
        "id": record.record_id,
        "properties": properties,
        "createdAt": hs_time(record.created_at),
        "updatedAt": hs_time(record.modified_at),
        "archived": record.deleted_at is not None,
    }
    if record.deleted_at is not None:
        body["archivedAt"] = hs_time(record.deleted_at)
    if trace:
        body["objectWriteTraceId"] = trace
    return body


def error(status: int, category: str, message: str, context: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """HubSpot's error body (its `Error` schema)."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if context:
        body["context"] = context
    return body


def batch_error(category: str, message: str, context: dict[str, list[str]]) -> dict[str, Any]:
    """One entry of a 207's `errors` (StandardError)."""
    return {"status": "error", "category": category, "message": message, "context": context, "links": {}, "errors": []}


class Invalid(Exception):
    """A write HubSpot refuses: VALIDATION_ERROR (400), with its property problems."""

    def __init__(self, message: str, names: list[str], category: str = "VALIDATION_ERROR", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.names, self.category, self.status = message, names, category, status


def validate(obj: str, properties: Any) -> dict[str, str]:
    """Property values as HubSpot would store them; unknown or read-only properties are refused."""
    if not isinstance(properties, dict):
        raise Invalid("Invalid input JSON: properties must be an object", [])
    known = OBJECTS[obj]
    problems = []
    for name in properties:
        prop = known.get(name)
        if prop is None:
            problems.append(_problem(name, f'Property \\"{name}\\" does not exist', "PROPERTY_DOESNT_EXIST"))
        elif prop.read_only:
            problems.append(_problem(name, f'\\"{name}\\" is a read only property', "READ_ONLY_VALUE"))
    if problems:
        raise Invalid(f"Property values were not valid: [{','.join(problems)}]", [str(n) for n in properties])
    cleaned = {str(k): "" if v is None else str(v) for k, v in properties.items()}
    if "email" in cleaned:
        cleaned["email"] = cleaned["email"].strip().lower()  # HubSpot keeps emails in lower case
    return cleaned


def _problem(name: str, message: str, code: str) -> str:
    """One entry of the JSON list HubSpot embeds, as text, in a VALIDATION_ERROR's message."""
    return f'{{"isValid":false,"message":"{message}","error":"{code}","name":"{name}"}}'
