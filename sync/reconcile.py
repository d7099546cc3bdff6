"""Deprecated: `sync.reconcile.reconcile_all` moved to `sync.tasks.reconcile_all` (issue 16).

Kept importable for one release so that a task queued, or a schedule row written, before migration
sync/0022 still runs. Remove in the release after; nothing in the code imports this module.
"""

from sync.tasks import reconcile_all as reconcile_all

__all__ = ["reconcile_all"]
