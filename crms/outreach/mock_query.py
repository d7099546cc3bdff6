"""The mock Outreach's collections: filters, sorts and cursor paging, as the reference allows them.

Filters: `filter[attr]=v1,v2` (any of) on the attributes the reference badges filterable (and `id`);
ranges `a..b` with `neginf` / `inf` on dates, numbers and ids; `filter[rel][attr]` on the
relationship attributes its description names ("You can use attributes id, customId, … to filter
prospects by account"); `newFilterSyntax=true` with `filter[attr][gte|gt|lte|lt]` instead of ranges
(never mixed). Sorts: `sort=a,-b` on sortable attributes (and `id`). A wrong name or a malformed
value is a 400 JSON:API error naming the parameter, never a 500.

Paging is keyset: `page[after]` carries the sort values and id of the last row sent, so a record
that changes or appears mid-walk neither shifts the pages after it nor is skipped; ties in the sort
are broken by id. `links.next` carries every original parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cmp_to_key
from typing import Any
from urllib.parse import urlencode

from crms.mocks.models import MockRecord
from crms.outreach import mock_schema, reference
from crms.outreach.reference import Attribute, Relationship

DEFAULT_PAGE = 50
MAX_PAGE = 1000
RANGED = ("date-time", "integer", "number")
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "gte": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "lte": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}
ID = Attribute("id", "integer", "", "", None, readonly=True, filterable=True, sortable=True)
COLUMNS = {"id", "createdAt", "updatedAt"}  # what a Row reads without the record's JSON
Test = Callable[["Row"], bool]


class BadRequest(Exception):
    """A 400 with one JSON:API error whose source names the query parameter."""

    def __init__(self, code: str, title: str, detail: str, parameter: str) -> None:
        super().__init__(detail)
        self.item = {"id": code, "title": title, "detail": detail, "source": {"parameter": parameter}}


class Row:
    """A record with the attribute values filters and sorts compare, worked out once and only when asked."""

    def __init__(self, record: MockRecord) -> None:
        self.record = record
        self.id = int(record.record_id)
        self._values: dict[str, Any] = {}

    def value(self, attribute: Attribute) -> Any:
        if attribute.name not in self._values:
            self._values[attribute.name] = _comparable(attribute, self._raw(attribute))
        return self._values[attribute.name]

    def _raw(self, attribute: Attribute) -> Any:
        if attribute is ID:
            return self.id
        if attribute.name in ("createdAt", "updatedAt"):
            return self.record.created_at if attribute.name == "createdAt" else self.record.modified_at
        return mock_schema.value(self.record, attribute)

    def linked(self, rel: Relationship) -> Any:
        return (self.record.fields.get(mock_schema.LINKS) or {}).get(rel.name)


@dataclass
class Page:
    rows: list[Row]
    after: str | None  # the next page's cursor; None on the last page
    count: int | None
    query: dict[str, str] = field(default_factory=dict)

    def next_link(self, collection: str) -> str | None:
        return None if self.after is None else f"{collection}?{urlencode({**self.query, 'page[after]': self.after})}"


def page(kind: str, params: Mapping[str, str], *, by_offset: bool = False) -> Page:
    """One page of live `kind` records for these query parameters.

    `by_offset` (the mock's `offset_paging` fault) makes page[after] a position instead, as an API that
    pages by offset would: a record that moves mid-walk then shifts the pages after it, and one is skipped.
    """
    size = _size(params.get("page[size]"))
    order = _order(kind, params.get("sort", ""))
    used = {attribute.name for attribute, _ in order}
    tests = list(_tests(kind, params, used))
    # Filtering and sorting on the row's own columns only (a poll by updatedAt): the JSON is read for the page alone.
    light = used <= COLUMNS
    rows = [row for row in map(Row, _records(kind, light=light)) if all(test(row) for test in tests)]

    def ordered(a: list[Any], b: list[Any]) -> int:
        return _compare(a, b, order)

    compare = cmp_to_key(ordered)
    keyed = sorted(((_key(row, order), row) for row in rows), key=lambda pair: compare(pair[0]))
    start = _start(params, len(order), [compare(key) for key, _ in keyed], compare, by_offset=by_offset)
    chosen = keyed[start : start + size]
    more = start + size < len(keyed)
    query = {k: v for k, v in params.items() if k != "page[after]"}
    last = [start + size] if by_offset else chosen[-1][0] if chosen else []
    cursor = _encode(params.get("sort", ""), last) if more and chosen else None
    count = len(rows) if params.get("count", "true") != "false" else None
    return Page(_whole([row for _, row in chosen]) if light else [row for _, row in chosen], cursor, count, query)


def _start(
    params: Mapping[str, str], width: int, keys: list[Any], compare: Callable[[Any], Any], *, by_offset: bool
) -> int:
    """Where the page starts: just after the cursor's row in the sort order (or at its position)."""
    if not params.get("page[after]"):
        return 0
    after = _decode(params["page[after]"], params.get("sort", ""), 1 if by_offset else width)
    if not by_offset:
        return bisect_right(keys, compare(after))
    if not (isinstance(after[0], int) and not isinstance(after[0], bool) and after[0] >= 0):
        raise _bad_cursor()
    return after[0]


def _whole(rows: list[Row]) -> list[Row]:
    full = MockRecord.objects.in_bulk([row.record.pk for row in rows])
    return [Row(full[row.record.pk]) for row in rows]


def _listed(kind: str) -> reference.Resource:
    """The reference's prospect or account; webhooks (not in it) filter and sort by id only."""
    return reference.resource(kind) if mock_schema.known(kind) else reference.Resource(kind, {}, {})


def _records(kind: str, *, light: bool = False) -> Iterable[MockRecord]:
    records = MockRecord.objects.filter(system="outreach", object=kind, deleted_at__isnull=True)
    if light:
        records = records.only("pk", "record_id", "created_at", "modified_at")
    return records.iterator(2000)


# --- page size and cursor ------------------------------------------------------------------------


def _size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(
            "invalidPageSize",
            "Invalid Page Size",
            f"page[size] must be a whole number from 1 to {MAX_PAGE}, not {raw!r}",
            "page[size]",
        )
    return int(raw)


def _encode(sort: str, key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"sort": sort, "after": key}).encode()).decode()


def _decode(cursor: str, sort: str, length: int) -> list[Any]:
    try:
        found = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        after = found["after"]
        if found["sort"] != sort or not isinstance(after, list) or len(after) != length:
            raise ValueError("another query's cursor")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _bad_cursor() from None
    return after


def _bad_cursor() -> BadRequest:
    detail = "page[after] is not a cursor this query handed out: follow links.next"
    return BadRequest("invalidPageCursor", "Invalid Page Cursor", detail, "page[after]")


# --- sort ---------------------------------------------------------------------------------------


def _order(kind: str, sort: str) -> list[tuple[Attribute, bool]]:
    """(attribute, descending) for each sort key, then id (ascending) to break ties."""
    order: list[tuple[Attribute, bool]] = []
    for part in sort.split(",") if sort else []:
        name = part.strip().removeprefix("-")
        attribute = ID if name == "id" else _listed(kind).attributes.get(name)
        if attribute is None or not attribute.sortable:
            what = "not an attribute" if attribute is None else "not sortable"
            raise BadRequest("invalidSort", "Invalid Sort", f"{name!r} is {what} of {kind}", "sort")
        order.append((attribute, part.strip().startswith("-")))
    if not any(attribute is ID for attribute, _ in order):
        order.append((ID, False))
    return order


def _key(row: Row, order: list[tuple[Attribute, bool]]) -> list[Any]:
    return [row.value(attribute) for attribute, _ in order]


def _compare(a: list[Any], b: list[Any], order: list[tuple[Attribute, bool]]) -> int:
    """Nulls first, as Outreach's MySQL sorts them ascending."""
    for x, y, (_, descending) in zip(a, b, order, strict=True):
        if x == y:
            continue
        smaller = x is None or (y is not None and x < y)
        return (1 if smaller else -1) if descending else (-1 if smaller else 1)
    return 0


# --- filters ------------------------------------------------------------------------------------


def _tests(kind: str, params: Mapping[str, str], used: set[str]) -> Iterable[Test]:
    """One test per filter parameter; `used` gains the attribute names they read ("" for a relationship)."""
    new_syntax = params.get("newFilterSyntax", "false") == "true"
    for key, raw in params.items():
        if key in ("include",) or key.startswith("fields["):
            raise BadRequest(
                "unsupportedParameter",
                "Unsupported Parameter",
                f"{key}: the mock answers whole resources and includes nothing",
                key,
            )
        if key.startswith("page[") and key not in ("page[size]", "page[after]"):
            raise BadRequest(
                "unsupportedParameter",
                "Unsupported Parameter",
                f"{key}: page with page[size] and the page[after] cursor of links.next",
                key,
            )
        if not key.startswith("filter["):
            continue
        parts = key.removeprefix("filter[").removesuffix("]").split("][")
        if not key.endswith("]") or not 1 <= len(parts) <= 2 or not all(parts):
            raise BadRequest("invalidFilter", "Invalid Filter", f"{key} is not a filter parameter", key)
        used.add("" if parts[0] in _listed(kind).relationships else parts[0])
        yield _test(kind, parts, raw, key, new_syntax)


def _test(kind: str, parts: list[str], raw: str, key: str, new_syntax: bool) -> Test:
    listed = _listed(kind)
    name = parts[0]
    rel = listed.relationships.get(name)
    if rel is not None:
        return _relationship_test(kind, rel, parts, raw, key, new_syntax)
    attribute = ID if name == "id" else listed.attributes.get(name)
    if attribute is None or not attribute.filterable:
        what = "not an attribute" if attribute is None else "not filterable"
        raise BadRequest("invalidFilter", "Invalid Filter", f"{name!r} is {what} of {kind}", key)
    if len(parts) == 2:
        return _operator_test(attribute, parts[1], raw, key, new_syntax)
    matches = _matcher(attribute, raw, key, new_syntax)
    return lambda row: matches(row.value(attribute))


def _relationship_test(kind: str, rel: Relationship, parts: list[str], raw: str, key: str, new_syntax: bool) -> Test:
    if len(parts) != 2 or parts[1] not in rel.filter_by:
        allowed = ", ".join(rel.filter_by) or "nothing: it cannot be used as a filter"
        raise BadRequest(
            "invalidFilter", "Invalid Filter", f"{key}: {kind}s are filtered by {rel.name} on {allowed}", key
        )
    name = parts[1]
    if not mock_schema.known(rel.to):  # users, stages, personas…: the mock keeps their ids only
        if name != "id":
            return lambda row: False
        matches = _matcher(ID, raw, key, new_syntax)
        return lambda row: not rel.many and row.linked(rel) is not None and matches(row.linked(rel)["id"])
    target = reference.resource(rel.to)
    related = ID if name == "id" else target.attributes[name]
    matches = _matcher(related, raw, key, new_syntax)
    others = {row.id: row for row in map(Row, _records(rel.to))}

    def test(row: Row) -> bool:
        identifier = row.linked(rel)
        other = others.get(identifier["id"]) if identifier else None
        return other is not None and matches(other.value(related))

    return test


def _operator_test(attribute: Attribute, operator: str, raw: str, key: str, new_syntax: bool) -> Test:
    if not new_syntax:
        raise BadRequest(
            "invalidFilter", "Invalid Filter", f"{key}: operators need newFilterSyntax=true (or use a range, a..b)", key
        )
    if operator not in OPERATORS or attribute.kind not in RANGED:
        raise BadRequest("invalidFilter", "Invalid Filter", f"{key}: use gte, gt, lte or lt on dates and numbers", key)
    bound, apply = _parse(attribute, raw, key), OPERATORS[operator]
    return lambda row: (found := row.value(attribute)) is not None and apply(found, bound)


def _matcher(attribute: Attribute, raw: str, key: str, new_syntax: bool) -> Callable[[Any], bool]:
    if ".." in raw and attribute.kind in RANGED:
        if new_syntax:
            raise BadRequest(
                "invalidFilter", "Invalid Filter", f"{key}: with newFilterSyntax=true use [gte]/[lte], not a range", key
            )
        low_raw, _, high_raw = raw.partition("..")
        low = None if low_raw in ("", "neginf") else _parse(attribute, low_raw, key)
        high = None if high_raw in ("", "inf") else _parse(attribute, high_raw, key)
        return lambda v: v is not None and (low is None or v >= low) and (high is None or v <= high)
    wanted = {_parse(attribute, part, key) for part in raw.split(",")}
    if attribute.type == "array":
        return lambda v: any(_comparable_item(attribute, item) in wanted for item in v or [])
    return lambda v: v in wanted


def _parse(attribute: Attribute, raw: str, key: str) -> Any:
    """A filter value as the comparable value of this attribute; a malformed one is a 400."""
    text = raw.strip()
    try:
        if attribute.kind in ("integer", "number"):
            number = float(text) if attribute.kind == "number" else int(text)
            return number
        if attribute.kind == "boolean":
            return {"true": True, "false": False}[text]
        if attribute.kind == "date-time":
            return _instant(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (ValueError, KeyError):
        expected = {
            "integer": "a whole number",
            "number": "a number",
            "boolean": "true or false",
            "date-time": "an ISO 8601 date and time, or a range a..b (neginf, inf)",
        }[attribute.kind]
        raise BadRequest("invalidFilter", "Invalid Filter", f"{key}: {raw!r} is not {expected}", key) from None
    return _comparable_item(attribute, text)


def _comparable(attribute: Attribute, raw: Any) -> Any:
    if raw is None:
        return None
    if attribute.kind == "date-time":
        return _instant(raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw).replace("Z", "+00:00")))
    return raw


def _comparable_item(attribute: Attribute, item: Any) -> Any:
    return item.lower() if attribute.format == "email" and isinstance(item, str) else item


def _instant(moment: datetime) -> str:
    """One fixed-width UTC spelling, microseconds included: compared as strings, it compares as time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
