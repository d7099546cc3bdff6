"""SOQL text for polling. Values are formatted, never interpolated from user input:
object and field names are checked against a strict pattern first."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})$")
PAGE_LIMIT = 2000


def select_changed(object_type: str, fields: list[str], *, since: str) -> str:
    for name in [object_type, *fields]:
        if not _NAME.match(name):
            raise ValueError(f"not a Salesforce name: {name!r}")
    if not _DATETIME.match(since):
        raise ValueError(f"not a SOQL datetime: {since!r}")
    return (
        f"SELECT {', '.join(fields)} FROM {object_type} "  # noqa: S608 - names checked above
        f"WHERE SystemModstamp > {since} ORDER BY SystemModstamp ASC, Id ASC LIMIT {PAGE_LIMIT}"
    )


def soql_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
