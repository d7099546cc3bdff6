"""The (updated_at, key) cursor the table-like connectors share, and time-zone defaults."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from crms.base import ConnectorError


def as_utc(moment: datetime) -> datetime:
    """A naive time is taken as UTC (what SQLite and files hold); an aware one is kept."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def pair_dump(stamp: Any, key: Any) -> str:
    return json.dumps([stamp, key])


def pair_load(cursor: str | None) -> tuple[Any, Any] | None:
    """[updated_at, key] as saved by pair_dump; None means "from the beginning"."""
    if cursor is None:
        return None
    try:
        stamp, key = json.loads(cursor)
    except (ValueError, TypeError) as exc:
        raise ConnectorError(f"not a cursor from this connector: {cursor!r}", code="invalid_cursor",
                             permanent=True) from exc  # fmt: skip
    return stamp, key
