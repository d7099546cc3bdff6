"""Deprecated: `sync.alerts.alerts_scheduled` moved to `sync.tasks.alerts_scheduled` (issue 16).

Kept importable for one release so that a task queued, or a schedule row written, before migration
sync/0022 still runs. Remove in the release after; nothing in the code imports this module.
"""

from sync.tasks import alerts_scheduled as alerts_scheduled

__all__ = ["alerts_scheduled"]
