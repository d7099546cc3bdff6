"""The mock HubSpot's CRM search (POST /crm/v3/objects/{object}/search), with HubSpot's documented limits.

Filters in a group are ANDed, groups ORed; at most 5 groups, 6 filters in a group, 18 in all; one sort;
at most 200 results a page (10 by default); and no query pages past 10,000 results (a 400). Archived
records are never found. Date properties compare as epoch milliseconds, as the filters give them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from crms.hubspot import mock_store as store
from crms.hubspot.mock_schema import MODIFIED, OBJECTS, Invalid, epoch_ms, public_object, values
from crms.hubspot.wire import parse_time
from crms.mocks.models import MockRecord

MAX_PAGE, DEFAULT_PAGE, CAP = 200, 10, 10_000
MAX_GROUPS, MAX_FILTERS_IN_GROUP, MAX_FILTERS = 5, 6, 18
OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)


def search_page(obj: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("Invalid input JSON: the search request must be an object", [])
    limit, after = _int(body.get("limit"), DEFAULT_PAGE), _int(body.get("after"), 0)
    if not 0 < limit <= MAX_PAGE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE}", ["limit"])
    if after + limit > CAP:
        raise Invalid(f"Cannot page beyond {CAP} results; narrow the query instead", ["after"])
    groups = _groups(body.get("filterGroups") or [])
    rows = [record for record in _candidates(obj, groups) if not groups or any(_holds(record, g) for g in groups)]
    rows = _sorted(obj, rows, body.get("sorts") or [])
    page = rows[after : after + limit]
    answer: dict[str, Any] = {"total": len(rows), "results": [public_object(r, body.get("properties")) for r in page]}
    if after + limit < len(rows):
        answer["paging"] = {"next": {"after": str(after + limit)}}
    return answer


def _int(value: Any, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Invalid(f"{value!r} is not an integer", []) from None


def _groups(raw: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(raw, list) or len(raw) > MAX_GROUPS:
        raise Invalid(f"At most {MAX_GROUPS} filterGroups are allowed", ["filterGroups"])
    groups = [list(group.get("filters") or []) for group in raw]
    if any(len(g) > MAX_FILTERS_IN_GROUP for g in groups) or sum(map(len, groups)) > MAX_FILTERS:
        raise Invalid(f"At most {MAX_FILTERS_IN_GROUP} filters in a group and {MAX_FILTERS} in all", ["filterGroups"])
    for group in groups:
        for item in group:
            if item.get("operator") not in OPERATORS:
                raise Invalid(f"Unknown operator {item.get('operator')!r}", ["operator"])
    return groups


def _candidates(obj: str, groups: list[list[dict[str, Any]]]) -> QuerySet[MockRecord]:
    """Live records; a single group bounding the last-modified stamp from below is answered by the index."""
    rows = store.live(obj)
    if len(groups) == 1:
        for item in groups[0]:
            if item.get("propertyName") == MODIFIED[obj] and item.get("operator") in ("GT", "GTE"):
                since = _ms(item.get("value"))
                if since is not None:
                    floor = datetime.fromtimestamp(since / 1000, UTC) - timedelta(milliseconds=1)
                    rows = rows.filter(modified_at__gte=floor)
    return rows


def _holds(record: MockRecord, group: list[dict[str, Any]]) -> bool:
    held = values(record)
    return all(_test(record.object, held.get(str(f.get("propertyName"))), f) for f in group)


def _test(obj: str, value: str | None, item: dict[str, Any]) -> bool:
    operator, name = item["operator"], str(item.get("propertyName"))
    if operator == "HAS_PROPERTY":
        return value not in (None, "")
    if operator == "NOT_HAS_PROPERTY":
        return value in (None, "")
    if value in (None, ""):
        return operator in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
    assert value is not None  # noqa: S101 - checked just above
    prop = OBJECTS[obj].get(name)
    kind = prop.type if prop else "string"
    left = _key(kind, value)
    if operator in ("IN", "NOT_IN"):
        found = left in {_key(kind, str(v)) for v in item.get("values") or []}
        return found if operator == "IN" else not found
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(item.get("value") or "").lower().replace("*", "")
        found = token in value.lower()
        return found if operator == "CONTAINS_TOKEN" else not found
    right = _key(kind, str(item.get("value")))
    if operator == "BETWEEN":
        high = _key(kind, str(item.get("highValue")))
        return _compare("GTE", left, right) and _compare("LTE", left, high)
    return _compare(operator, left, right)


def _compare(operator: str, left: Any, right: Any) -> bool:
    try:
        return bool(
            {
                "EQ": left == right,
                "NEQ": left != right,
                "LT": left < right,
                "LTE": left <= right,
                "GT": left > right,
                "GTE": left >= right,
            }[operator]
        )
    except TypeError:
        return False


def _key(kind: str, value: str) -> Any:
    """How HubSpot compares: dates as epoch ms (a filter gives ms; a record holds ISO), numbers as numbers,
    the rest without case."""
    if kind in ("datetime", "date"):
        return _ms(value)
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    return value.lower()


def _ms(value: Any) -> int | None:
    text = str(value or "").strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return epoch_ms(parse_time(text))
    except ValueError:
        return None


def _sorted(obj: str, rows: list[MockRecord], sorts: list[Any]) -> list[MockRecord]:
    """One sort, `{"propertyName", "direction"}` (the docs) or "-name" (clients); without one, oldest first."""
    if not sorts:
        return sorted(rows, key=lambda r: (r.created_at, int(r.record_id)))
    first = sorts[0]
    if isinstance(first, str):
        name, descending = first.lstrip("-"), first.startswith("-")
    else:
        name, descending = str(first.get("propertyName")), str(first.get("direction", "")).upper() == "DESCENDING"
    prop = OBJECTS[obj].get(name)
    kind = prop.type if prop else "string"

    def key(record: MockRecord) -> tuple[bool, Any, int]:
        value = values(record).get(name)
        return (value in (None, ""), _key(kind, value) if value else 0, int(record.record_id))

    return sorted(rows, key=key, reverse=descending)
