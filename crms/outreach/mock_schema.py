"""The mock Outreach's prospects and accounts as Outreach's reference shapes them (reference.json).

Every attribute the reference lists is in every answer: what was set, else what Outreach shows for
an attribute nobody set. The airbyte records captured from a real org show those: `[]` for lists,
`false` for flags (`named` true: only named accounts are listed), 0 for Outreach's own counters,
twelve `[0, 0]` months of contact history, null for the rest. Values written are checked against the
reference's types; read-only attributes are refused with a 422 (the reference declares no other
error for a write, and silently dropping a value would hide the mistake).
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from crms.mocks.models import MockRecord
from crms.outreach import reference
from crms.outreach.reference import Attribute, Relationship

API_USER = 1  # the user who authorised the app: API calls act as them (CRM-FACTS, "Auth")
ORG_USER = 2  # a person working in Outreach: staff pushes act as them
LINKS = "_relationships"  # where a record keeps its to-one relationships, inside MockRecord.fields
HISTORY_MONTHS = 12  # contactHistogram: "the last 12 months of email contact history"
FLAG_DEFAULTS = {"named": True}


class Invalid(Exception):
    """A 422 with JSON:API errors, one per problem, each pointing at what it is about."""

    def __init__(self, detail: str, pointer: str = "/data", *, more: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.items = [_item(d, p) for d, p in [(detail, pointer), *(more or [])]]

    @classmethod
    def joined(cls, errors: list[Invalid]) -> Invalid:
        """The problems of several checks as one 422."""
        joined = cls(str(errors[0]))
        joined.items = [item for error in errors for item in error.items]
        return joined


def _item(detail: str, pointer: str) -> dict[str, Any]:
    return {"id": "validationError", "title": "Validation Error", "detail": detail, "source": {"pointer": pointer}}


def known(kind: str) -> bool:
    return kind in reference.KINDS


def ol_time(value: datetime) -> str:
    """Outreach writes `2021-11-10T14:17:38.000Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# --- reading ------------------------------------------------------------------------------------


def value(record: MockRecord, attribute: Attribute) -> Any:
    """One attribute as Outreach shows it: stored, derived, or its default."""
    if attribute.name == "createdAt":
        return ol_time(record.created_at)
    if attribute.name == "updatedAt":
        return ol_time(record.modified_at)
    if record.object == "prospect" and attribute.name == "name":  # "the full name of the prospect"
        parts = [record.fields.get("firstName"), record.fields.get("lastName")]
        return " ".join(str(p) for p in parts if p) or None
    if attribute.name in record.fields:
        return record.fields[attribute.name]
    return default(attribute)


def default(attribute: Attribute) -> Any:
    if attribute.name == "contactHistogram":
        return [[0, 0] for _ in range(HISTORY_MONTHS)]
    if attribute.type == "array":
        return []
    if attribute.type == "boolean":
        return FLAG_DEFAULTS.get(attribute.name, False)
    if attribute.readonly and attribute.type == "integer":
        return 0
    if attribute.readonly and attribute.type == "number":
        return 0.0
    return None


def attributes(record: MockRecord) -> dict[str, Any]:
    if not known(record.object):
        return {k: v for k, v in record.fields.items() if not k.startswith("_")}
    stored, derived = record.fields, _derived(record)
    return {
        name: derived[name] if name in derived else stored[name] if name in stored else _fresh(empty)
        for name, empty in _defaults(record.object)
    }


def _derived(record: MockRecord) -> dict[str, Any]:
    shown = {"createdAt": ol_time(record.created_at), "updatedAt": ol_time(record.modified_at)}
    if record.object == "prospect":
        shown["name"] = value(record, reference.resource("prospect").attributes["name"])
    return shown


def _fresh(empty: Any) -> Any:
    return copy.deepcopy(empty) if isinstance(empty, list) else empty


@cache
def _defaults(kind: str) -> list[tuple[str, Any]]:
    return [(a.name, default(a)) for a in reference.resource(kind).attributes.values()]


def relationships(record: MockRecord, base: str) -> dict[str, Any]:
    """To-one: {"data": null | {"type", "id"}}; to-many: {"links": {"related"}}, as Outreach's docs show them."""
    if not known(record.object):
        return {}
    linked = record.fields.get(LINKS) or {}
    shaped: dict[str, Any] = {}
    for rel in reference.resource(record.object).relationships.values():
        if rel.many:
            related = f"{base}{rel.collection}?filter[{record.object}][id]={record.record_id}"
            shaped[rel.name] = {"links": {"related": related}}
        else:
            shaped[rel.name] = {"data": linked.get(rel.name)}
    return shaped


def resource(record: MockRecord, base: str) -> dict[str, Any]:
    return {
        "type": record.object,
        "id": int(record.record_id),
        "attributes": attributes(record),
        "relationships": relationships(record, base),
        "links": {"self": f"{base}/{record.object}s/{record.record_id}"},
    }


# --- writing ------------------------------------------------------------------------------------


def validate(kind: str, given: Any, *, creating: bool) -> dict[str, Any]:
    """The attributes of a write, each checked against the reference: all problems in one 422."""
    if not isinstance(given, dict):
        raise Invalid("data.attributes must be an object", "/data/attributes")
    listed = reference.resource(kind).attributes
    problems = [(p, f"/data/attributes/{name}") for name, v in given.items() if (p := _problem(kind, listed, name, v))]
    if creating and kind == "account" and not given.get("name"):
        problems.append(("name can't be blank", "/data/attributes/name"))
    if problems:
        (detail, pointer), *more = problems
        raise Invalid(detail, pointer, more=more)
    return dict(given)


def _problem(kind: str, listed: dict[str, Attribute], name: str, given: Any) -> str | None:
    attribute = listed.get(name)
    if attribute is None:
        return f"{name} is not an attribute of {kind}"
    if attribute.readonly:
        return f"{name} is read-only"
    if given is None:
        return None
    return _type_problem(attribute, given)


def _type_problem(attribute: Attribute, given: Any) -> str | None:
    name, kind = attribute.name, attribute.kind
    if kind == "array":
        if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
            return f"{name} must be a list of strings, not {_shown(given)}"
        if attribute.format == "email" and not all(re.fullmatch(r"[^@\s]+@[^@\s]+", item) for item in given):
            return f"{name} must be a list of email addresses"
        return None
    if kind == "integer" and (isinstance(given, bool) or not isinstance(given, int)):
        return f"{name} must be an integer, not {_shown(given)}"
    if kind == "number" and (isinstance(given, bool) or not isinstance(given, int | float)):
        return f"{name} must be a number, not {_shown(given)}"
    if kind == "boolean" and not isinstance(given, bool):
        return f"{name} must be true or false, not {_shown(given)}"
    if kind in ("string", "date", "date-time") and not isinstance(given, str):
        return f"{name} must be a string, not {_shown(given)}"
    if kind in ("date", "date-time") and not _is_time(given, date_only=kind == "date"):
        return f"{name} must be an ISO 8601 {'date' if kind == 'date' else 'date and time'}, not {given!r}"
    if attribute.max_length is not None and isinstance(given, str) and len(given) > attribute.max_length:
        return f"{name} is too long (maximum is {attribute.max_length} characters)"
    return None


def _is_time(text: str, *, date_only: bool) -> bool:
    """A date-time; for a date attribute also a plain date (real records hold those as date-times)."""
    try:
        if date_only and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in text or date_only


def _shown(given: Any) -> str:
    names = {str: "the string", bool: "the boolean", int: "the integer", float: "the number", list: "a list"}
    return f"{names.get(type(given), type(given).__name__)} {given!r}" if type(given) in names else "an object"


def relationships_given(kind: str, given: Any) -> dict[str, dict[str, Any] | None]:
    """The to-one relationships of a write ({"data": null | {"type", "id"}}), checked against the reference.

    An account must exist; users, personas and stages are not kept by the mock, so any id goes.
    """
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise Invalid("data.relationships must be an object", "/data/relationships")
    listed = reference.resource(kind).relationships
    found: dict[str, dict[str, Any] | None] = {}
    problems: list[tuple[str, str]] = []
    for name, body in given.items():
        problem, identifier = _relationship_problem(kind, listed.get(name), name, body)
        if problem:
            problems.append((problem, f"/data/relationships/{name}"))
        else:
            found[name] = identifier
    if problems:
        (detail, pointer), *more = problems
        raise Invalid(detail, pointer, more=more)
    return found


def _relationship_problem(
    kind: str, rel: Relationship | None, name: str, body: Any
) -> tuple[str | None, dict[str, Any] | None]:
    if rel is None:
        return f"{name} is not a relationship of {kind}", None
    if rel.readonly:
        return f"{name} is read-only", None
    if rel.many:
        return f"{name}: the mock keeps to-one relationships only", None
    data = body.get("data", ...) if isinstance(body, dict) else ...
    if data is None:
        return None, None
    if not isinstance(data, dict) or data.get("type") != rel.to or isinstance(data.get("id"), bool):
        return f'{name} must be {{"data": null}} or {{"data": {{"type": "{rel.to}", "id": <integer>}}}}', None
    if not isinstance(data.get("id"), int):
        return f"{name}.data.id must be an integer", None
    if rel.to == "account" and not _exists("account", data["id"]):
        return f"{name}: there is no account with id {data['id']}", None
    return None, {"type": rel.to, "id": data["id"]}


def _exists(kind: str, record_id: int) -> bool:
    return MockRecord.objects.filter(
        system="outreach", object=kind, record_id=str(record_id), deleted_at__isnull=True
    ).exists()
