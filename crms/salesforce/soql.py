"""SOQL text for polling. Values are formatted, never interpolated from user input:
object and field names are checked against a strict pattern first."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})$")
PAGE_LIMIT = 2000


def select_changed(object_type: str, fields: list[str], *, since: str, after_id: str | None = None) -> str:
    """Changes in keyset order: after `since`, or, with `after_id`, after the record (since, after_id).

    Stamps have whole seconds and a bulk edit gives thousands of records the same one, so a cursor
    on the stamp alone either skips or repeats; (SystemModstamp, Id) is unique and totally ordered.
    """
    for name in [object_type, *fields]:
        if not _NAME.match(name):
            raise ValueError(f"not a Salesforce name: {name!r}")
    if not _DATETIME.match(since):
        raise ValueError(f"not a SOQL datetime: {since!r}")
    if after_id is not None and not _ID.match(after_id):
        raise ValueError(f"not a Salesforce id: {after_id!r}")
    where = f"SystemModstamp > {since}"
    if after_id is not None:
        where = f"(SystemModstamp > {since} OR (SystemModstamp = {since} AND Id > '{after_id}'))"
    return (
        f"SELECT {', '.join(fields)} FROM {object_type} "  # noqa: S608 - names, time and id checked above
        f"WHERE {where} ORDER BY SystemModstamp ASC, Id ASC LIMIT {PAGE_LIMIT}"
    )


def soql_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
