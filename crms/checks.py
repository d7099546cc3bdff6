"""`manage.py check --deploy --database default`: secrets at rest not under the newest key are named."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DatabaseError

from crms.rotation import stale_rows

LISTED = 20  # rows named one by one; the rest counted


@register(Tags.security, deploy=True)
def secrets_under_the_newest_key(app_configs: Any, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not databases:  # reads rows: only when asked to look at a database
        return []
    try:
        rows = list(stale_rows())
    except DatabaseError:  # not migrated yet: nothing stored to judge
        return []
    hint = "Run `manage.py rotate_secrets` (then drop the old key); `--dry-run` lists them."
    found: list[CheckMessage] = [
        Warning(f"{row.label} is not encrypted with the newest key ({row.why}).", hint=hint, id="crms.W001")
        for row in rows[:LISTED]
    ]
    if len(rows) > LISTED:
        found.append(Warning(f"...and {len(rows) - LISTED} more.", hint=hint, id="crms.W001"))
    return found
