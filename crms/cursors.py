"""The (updated_at, key) cursor the table-like connectors share, and time-zone defaults.

A reader lists rows in (updated_at, key) order and hands out the pair of the last row as its
cursor; the next page is the rows whose pair is strictly greater. Both halves must be compared
exactly as the order compares them: the time as an instant (not as the text a writer left),
the key in the column's own type and collation (text "10" sorts before "9", the number 10
after 9).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from crms.base import ConnectorError


def as_utc(moment: datetime) -> datetime:
    """A naive time is taken as UTC (what SQLite and files hold); an aware one is kept."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def instant(value: Any) -> datetime:
    """A stored timestamp as an aware datetime: a datetime as it is, a number as Unix seconds, text as
    ISO-8601 (' ' or 'T', 'Z' or an offset, any fraction); one without a zone is UTC.

    Raises ValueError, OverflowError or OSError for a value that is no time.
    """
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


def pair_dump(stamp: Any, key: Any) -> str:
    return json.dumps([stamp, key])


def pair_load(cursor: str | None) -> tuple[Any, Any] | None:
    """[updated_at, key] as saved by pair_dump; None means "from the beginning"."""
    if cursor is None:
        return None
    try:
        stamp, key = json.loads(cursor)
    except (ValueError, TypeError) as exc:
        raise ConnectorError(
            f"not a cursor from this connector: {cursor!r}", code="invalid_cursor", permanent=True
        ) from exc
    return stamp, key
