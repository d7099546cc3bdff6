"""Outreach's own reference (outreach.oas.json) reduced to what the connector and the mock need.

The reference marks each attribute with badge images in its description (`badges/readonly.svg`,
`filterable.svg`, `sortable.svg`) and says in each relationship's description which attributes of
the related resource filter by it ("You can use attributes id, customId, name, named and
updatedAt to filter prospects by account"). `derive()` reads those from the reference; the result
is kept in `reference.json` beside this module so the service never needs the 1 MB file at run
time. A test derives it again from `../shared/fixtures/outreach/outreach.oas.json` and compares.

Rebuild: `python -m crms.outreach.reference ../shared/fixtures/outreach/outreach.oas.json`
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

KINDS = ("prospect", "account")
STORED = Path(__file__).with_name("reference.json")
_BADGE = re.compile(r"badges/(\w+)\.svg")
_FILTER_BY = re.compile(r"You can use (?:only the attribute|attributes) (.+?) to filter")


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str  # the JSON type: string, integer, number, boolean, array
    format: str  # date-time, date, float, … ("" when none); for an array, its items' format
    items: str  # an array's item type ("" for scalars)
    max_length: int | None
    readonly: bool
    filterable: bool
    sortable: bool

    @property
    def kind(self) -> str:
        """What a value must be: the JSON type, or `date` / `date-time` for strings in those formats."""
        return self.format if self.type == "string" and self.format in ("date", "date-time") else self.type


@dataclass(frozen=True)
class Relationship:
    name: str
    to: str  # the related resource type
    many: bool
    readonly: bool
    ids: bool  # the reference offers a `data` alternative (resource identifiers), not only `links`
    filter_by: tuple[str, ...]  # attributes of the related resource usable as filter[name][attribute]
    collection: str  # the related resource's collection path, e.g. "/opportunities"


@dataclass(frozen=True)
class Resource:
    kind: str
    attributes: dict[str, Attribute]
    relationships: dict[str, Relationship]

    def writable(self) -> list[Attribute]:
        return [a for a in self.attributes.values() if not a.readonly]


def resource(kind: str) -> Resource:
    return _loaded()[kind]


@cache
def _loaded() -> dict[str, Resource]:
    return {kind: _resource(kind, spec) for kind, spec in json.loads(STORED.read_text()).items()}


def _resource(kind: str, spec: dict[str, Any]) -> Resource:
    attributes = {row["name"]: Attribute(**row) for row in spec["attributes"]}
    relationships = {
        row["name"]: Relationship(**{**row, "filter_by": tuple(row["filter_by"])}) for row in spec["relationships"]
    }
    return Resource(kind, attributes, relationships)


# --- deriving the table from the reference ------------------------------------------------------


def derive(oas: dict[str, Any]) -> dict[str, Any]:
    """{kind: {"attributes": [...], "relationships": [...]}} for prospect and account, in the reference's order."""
    schemas = oas["components"]["schemas"]
    collections = _collections(oas)
    return {
        kind: {
            "attributes": [_attribute(name, spec) for name, spec in schemas[kind]["properties"].items()],
            "relationships": [
                _relationship(name, spec, collections)
                for name, spec in schemas[f"{kind}Relationships"]["properties"].items()
            ],
        }
        for kind in KINDS
    }


def _attribute(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    badges = set(_BADGE.findall(spec.get("description", "")))
    items = spec.get("items") or {}
    return {
        "name": name,
        "type": spec["type"],
        "format": str(spec.get("format") or items.get("format") or ""),
        "items": str(items.get("type") or ""),
        "max_length": spec.get("maxLength"),
        "readonly": "readonly" in badges,
        "filterable": "filterable" in badges,
        "sortable": "sortable" in badges,
    }


def _relationship(name: str, spec: dict[str, Any], collections: dict[str, str]) -> dict[str, Any]:
    many = spec.get("type") == "array"
    alternatives = _alternatives(spec["items"] if many else spec)
    target = next(
        str(alt["properties"][part]["properties"][key]["enum"][0])
        for alt in alternatives
        for part, key in (("data", "type"), ("links", "related"))
        if part in alt.get("properties", {})
    )
    found = _FILTER_BY.search(spec.get("description", ""))
    filter_by = re.split(r",\s*|\s+and\s+", found.group(1)) if found else []
    return {
        "name": name,
        "to": target,
        "many": many,
        "readonly": "readonly" in _BADGE.findall(spec.get("description", "")),
        "ids": any("data" in alt.get("properties", {}) for alt in alternatives),
        "filter_by": [f for f in filter_by if f],
        "collection": collections.get(target, f"/{target}s"),
    }


def _alternatives(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The relationship objects a relationship may be: its `oneOf`, nested `oneOf`s flattened."""
    if "oneOf" not in spec:
        return [spec]
    return [leaf for alt in spec["oneOf"] for leaf in _alternatives(alt)]


def _collections(oas: dict[str, Any]) -> dict[str, str]:
    """Resource type → collection path, from each path whose GET answers a list of `<type>Response`."""
    found: dict[str, str] = {}
    for path, operations in oas["paths"].items():
        content = operations.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
        for media in content.values():
            ref = media.get("schema", {}).get("properties", {}).get("data", {}).get("items", {}).get("$ref", "")
            if ref.endswith("Response"):
                found.setdefault(ref.rsplit("/", 1)[-1].removesuffix("Response"), path)
    return found


def dump(table: dict[str, Any]) -> str:
    """One attribute or relationship a line: the stored table reads (and diffs) like a list."""
    lines = ["{"]
    for k, kind in enumerate(table):
        lines.append(f"  {json.dumps(kind)}: {{")
        for p, part in enumerate(("attributes", "relationships")):
            rows = table[kind][part]
            lines.append(f"    {json.dumps(part)}: [")
            lines += [f"      {json.dumps(row)}{',' if i < len(rows) - 1 else ''}" for i, row in enumerate(rows)]
            lines.append("    ]" + ("," if p == 0 else ""))
        lines.append("  }" + ("," if k < len(table) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    STORED.write_text(dump(derive(json.loads(Path(sys.argv[1]).read_text()))))
