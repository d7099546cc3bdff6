"""Our object names mapped to HubSpot objects: which HubSpot object, the unique property records are
upserted by, the property searches order changes by, and the properties we sync.

HubSpot holds every property value as a string ("17", "true", "" for none); `as_property` spells ours so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crms.base import ConnectorError, OutboundRecord

CONTACT_FIELDS = ("email", "firstname", "lastname", "phone", "company", "jobtitle", "lifecyclestage")
COMPANY_FIELDS = ("name", "domain", "phone", "city", "country", "industry")
# A company has no unique property of its own: a custom one, unique, holds System A's id (docs/connectors.md).
SOURCE_ID_PROPERTY = "recordsync_id"
DEFAULT_OBJECTS: dict[str, dict[str, Any]] = {
    "contact": {
        "object": "contacts",
        "id_property": "email",
        "modified_property": "lastmodifieddate",
        "fields": list(CONTACT_FIELDS),
    },
    "company": {
        "object": "companies",
        "id_property": SOURCE_ID_PROPERTY,
        "modified_property": "hs_lastmodifieddate",
        "fields": list(COMPANY_FIELDS),
    },
}
# HubSpot's own bookkeeping on every record: read for the cursor, never synced as data.
SYSTEM_PROPERTIES = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"})
# The properties whose value HubSpot keeps unique by itself; any other id_property must be made unique there.
NATURAL_KEYS = frozenset({"email", "hs_object_id"})


@dataclass(frozen=True)
class ObjectMap:
    name: str  # ours, e.g. "contact"
    object: str  # HubSpot's, e.g. "contacts", "companies", "deals", "2-123456"
    id_property: str  # a property with unique values: batch upserts match on it
    modified_property: str  # changes are searched and ordered by it
    fields: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"/crm/v3/objects/{self.object}"

    @property
    def holds_source_id(self) -> bool:
        """The unique property carries System A's id (we write it), rather than a natural key like email."""
        return self.id_property not in NATURAL_KEYS

    def properties(self, record: OutboundRecord) -> dict[str, str]:
        values = {name: as_property(value) for name, value in record.fields.items() if name not in SYSTEM_PROPERTIES}
        if self.holds_source_id:
            values[self.id_property] = record.record_id
        return values

    def match_value(self, record: OutboundRecord) -> str | None:
        if self.holds_source_id:
            return record.record_id
        value = record.fields.get(self.id_property)
        return as_property(value) or None

    def wanted(self) -> list[str]:
        """The properties a read asks for: the synced ones, the key and the stamp."""
        return sorted({*self.fields, self.id_property, self.modified_property})


def as_property(value: Any) -> str:
    """A value as HubSpot stores it: text; "" clears the property."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ";".join(as_property(item) for item in value)  # multiple checkboxes: values joined by ";"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def mappings(config: Mapping[str, Any]) -> dict[str, ObjectMap]:
    found: dict[str, ObjectMap] = {}
    for name, spec in (config.get("objects") or DEFAULT_OBJECTS).items():
        default = DEFAULT_OBJECTS.get(name, {})
        obj = str(spec.get("object") or default.get("object") or name)
        found[name] = ObjectMap(
            name=name,
            object=obj,
            id_property=str(spec.get("id_property") or default.get("id_property") or SOURCE_ID_PROPERTY),
            modified_property=str(
                spec.get("modified_property") or default.get("modified_property") or "hs_lastmodifieddate"
            ),
            fields=tuple(spec.get("fields") or default.get("fields") or ()),
        )
    return found


def unknown_object(object_type: str) -> ConnectorError:
    return ConnectorError(
        f"no HubSpot object is configured for {object_type!r} (config objects)", code="UNKNOWN_OBJECT", permanent=True
    )
