"""Handing work to the django-q2 cluster, after commit, without ever failing an accepted request.

The job rows are the truth; a task is only a nudge. If the broker is down the nudge is
lost, the jobs stay pending, and the periodic sweep (sync.tasks.sweep) nudges again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from django.core.cache import cache
from django_q.tasks import async_task

logger = logging.getLogger("recordsync.dispatch")

# One nudge per target per second is plenty: the dispatcher handles every pending job it finds.
NUDGE_DEBOUNCE_SECONDS = 1
# This process's own last nudge per target: most requests skip even the shared-cache check.
_last_nudge: dict[int, float] = {}
clock = time.monotonic  # swappable in tests


def nudge(connection_ids: Iterable[int]) -> int:
    """Queue a dispatch tick for each connection; returns how many were queued."""
    queued = 0
    for connection_id in connection_ids:
        now = clock()
        if now - _last_nudge.get(connection_id, float("-inf")) < NUDGE_DEBOUNCE_SECONDS:
            continue
        try:
            if cache.add(f"recordsync:nudge:{connection_id}", 1, timeout=NUDGE_DEBOUNCE_SECONDS):
                async_task("sync.tasks.dispatch_tick", connection_id, task_name=f"dispatch-{connection_id}")
                queued += 1
        except Exception as exc:  # the broker or cache is down: the sweep will catch up
            logger.warning(
                "broker unavailable; jobs stay pending until the sweep",
                extra={"target_id": connection_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            continue
        _last_nudge[connection_id] = now  # only a nudge that reached the broker (ours or another's) counts
    return queued


def reads_queue(event_ids: list[str]) -> None:
    """Queue read events after their commit; a lost one is the sweep's to find."""
    for event_id in event_ids:
        try:
            async_task("sync.tasks.record_read", event_id, task_name=f"read-{event_id}")
        except Exception as exc:  # the broker is down: the sweep queues it again
            logger.warning("broker unavailable; read not queued", extra={"event_id": event_id, "error": repr(exc)})
