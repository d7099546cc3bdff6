"""The Outreach resources we sync, how each is matched, and the JSON:API shapes they travel in.

Attribute names are Outreach's own (outreach.oas.json, components.schemas.prospect / account, kept
in reference.json): the writable ones, without the numbered custom fields custom1..custom150 that
both resources have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crms.base import OutboundRecord
from crms.outreach import reference

CUSTOM_FIELD = r"custom([1-9]|[1-9][0-9]|1[0-4][0-9]|150)"
ACCOUNT_MATCH_KEY = rf"^(domain|customId|{CUSTOM_FIELD})$"


def _writable(kind: str) -> tuple[str, ...]:
    return tuple(a.name for a in reference.resource(kind).writable() if not re.fullmatch(CUSTOM_FIELD, a.name))


PROSPECT_FIELDS = _writable("prospect")
ACCOUNT_FIELDS = _writable("account")
FIELD_TYPES = ("string", "integer", "number", "boolean", "array", "date", "date-time")  # reference.Attribute.kind
DEFAULT_OBJECTS: dict[str, dict[str, str]] = {
    "prospect": {"resource": "prospect", "match_key": "emails"},
    "account": {"resource": "account", "match_key": "domain"},
}


@dataclass(frozen=True)
class ObjectMap:
    """One of our object names bound to an Outreach resource type and the attribute it is matched on."""

    resource: str  # "prospect" or "account"
    match_key: str  # "emails"; "domain", "customId" or "customN"

    @property
    def path(self) -> str:
        return f"/{self.resource}s"

    @property
    def numbered_custom(self) -> bool:
        """custom1..custom150: the reference does not mark them filterable (customId, domain and emails it does)."""
        return re.fullmatch(CUSTOM_FIELD, self.match_key) is not None

    @property
    def holds_source_id(self) -> bool:
        """customId / customN are written with System A's id and matched on it; domain and emails come from fields."""
        return self.match_key == "customId" or self.numbered_custom

    def match_value(self, record: OutboundRecord) -> str | None:
        if self.holds_source_id:
            return record.record_id
        value = record.fields.get(self.match_key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            return None
        return str(value).strip() or None

    def attributes(self, record: OutboundRecord) -> dict[str, Any]:
        attributes = dict(record.fields)
        if isinstance(attributes.get("emails"), str):  # one address given as a string: Outreach wants a list
            attributes["emails"] = [attributes["emails"]]
        if self.holds_source_id:
            attributes[self.match_key] = record.record_id
        return attributes


def read_only(resource: str) -> frozenset[str]:
    """What Outreach computes itself (createdAt, updatedAt, name, clickCount, …): never written, never synced."""
    return frozenset(a.name for a in reference.resource(resource).attributes.values() if a.readonly)


def field_problems(config: dict[str, Any]) -> dict[str, str]:
    """Each configured field the reference does not have, marks read-only, or types otherwise, by its config path."""
    objects: dict[str, dict[str, Any]] = config.get("objects") or DEFAULT_OBJECTS
    problems: dict[str, str] = {}
    for name, spec in objects.items():
        listed = reference.resource(spec["resource"]).attributes
        for field, declared in (spec.get("fields") or {}).items():
            path = f"objects.{name}.fields.{field}"
            attribute = listed.get(field)
            if attribute is None:
                close = [a for a in listed if a.lower() == field.lower()]
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems[path] = f"{path}: Outreach {spec['resource']}s have no attribute {field!r}{hint}"
            elif attribute.readonly:
                problems[path] = f"{path}: {field} is read-only in Outreach (Outreach sets it)"
            elif declared != attribute.kind:
                problems[path] = f"{path}: Outreach's {field} is {_a(attribute.kind)}, not {_a(declared)}"
    return problems


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def mappings(config: dict[str, Any]) -> dict[str, ObjectMap]:
    objects: dict[str, dict[str, str]] = config.get("objects") or DEFAULT_OBJECTS
    return {
        name: ObjectMap(spec["resource"], spec.get("match_key") or DEFAULT_OBJECTS[spec["resource"]]["match_key"])
        for name, spec in objects.items()
    }


def document(resource: str, attributes: dict[str, Any], resource_id: int | None = None) -> dict[str, Any]:
    """A JSON:API request body: {"data": {"type", "id"?, "attributes"}} (the reference types `id` as integer)."""
    data: dict[str, Any] = {"type": resource}
    if resource_id is not None:
        data["id"] = resource_id
    data["attributes"] = attributes
    return {"data": data}


def parse_time(value: str) -> datetime:
    """Outreach writes `2021-11-10T14:17:38.000Z`."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
