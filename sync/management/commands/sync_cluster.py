"""The worker cluster: django-q2's qcluster with workers that take their tasks from the broker themselves,
so a kill -9 of any one process never stops the others (recordsync/qcluster.py says why)."""

from __future__ import annotations

from typing import Any

from django_q import cluster as q_cluster
from django_q.management.commands.qcluster import Command as QclusterCommand

from recordsync.qcluster import DirectSentinel, Flag


class Command(QclusterCommand):  # type: ignore[misc]
    help = "Run the worker cluster (django-q2 with no queue shared between worker processes)."

    def handle(self, *args: Any, **options: Any) -> None:
        q_cluster.Sentinel = DirectSentinel  # Cluster.start() spawns the module's Sentinel
        q_cluster.Event = Flag  # and makes its stop and start events from the module's Event
        super().handle(*args, **options)
