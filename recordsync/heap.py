"""The objects a process starts with, kept out of the garbage collector's way."""

from __future__ import annotations

import gc


def heap_freeze() -> int:
    """Collect once, then freeze every object alive now (Django, the apps, the URL conf and what they import):
    they live as long as the process, yet each full collection walked them all, a 60-120 ms pause on one
    request in a few dozen (docs/BENCHMARKS.md). Frozen, the collector walks only what requests and tasks
    allocate. Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
