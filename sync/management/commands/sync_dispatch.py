"""The dispatcher loop: about once a second, queue every ready batch, every due poll and every due
probe of a held quota owner, and expire lost leases.

Safe to run on several machines at once: every claim is a conditional update. SIGTERM or
Ctrl-C stops it between two passes.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from django.utils import timezone

from sync import tasks
from sync.delivery import engine, leases, liveness
from sync.ops.selectors import queue_lag

logger = logging.getLogger("recordsync.dispatch")
metrics_logger = logging.getLogger("recordsync.metrics")
METRICS_EVERY_SECONDS = 10.0


def lag_metric_log() -> dict[str, Any]:
    """The queue's lag as a CloudWatch embedded-metric-format line: on AWS the log group turns it
    into the `RecordSync/QueueLagSeconds` metric the workers scale on (deploy/aws); elsewhere it
    is one more JSON log line."""
    lag, due = queue_lag(timezone.now())
    service = os.environ.get("RECORDSYNC_METRICS_SERVICE", "recordsync")
    fields = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": "RecordSync",
                    "Dimensions": [["Service"]],
                    "Metrics": [{"Name": "QueueLagSeconds", "Unit": "Seconds"}, {"Name": "DueJobs", "Unit": "Count"}],
                }
            ],
        },
        "Service": service,
        "QueueLagSeconds": round(lag, 3),
        "DueJobs": due,
    }
    metrics_logger.info("queue lag", extra=fields)
    return fields


class Command(BaseCommand):
    help = "Run the dispatcher: queue ready batches about once a second (--once: a single pass)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="One pass, then exit")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between passes (default 1)")

    def handle(self, *args: Any, once: bool, interval: float, **options: Any) -> None:
        self.running = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        while self.running:
            started = time.monotonic()
            try:
                queued = self.dispatch_pass()
            except Exception as exc:  # the database or broker is away: keep looking, loudly
                if once:
                    raise
                logger.exception("dispatch pass failed", extra={"error": repr(exc)})
                queued = 0
            if once:
                self.stdout.write(f"queued {queued} batch(es)")
                return
            close_old_connections()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def dispatch_pass(self) -> int:
        now = time.monotonic()
        if not hasattr(self, "beater"):
            self.beater = liveness.Beater("dispatcher")
        self.beater.beat("idle")
        if now - getattr(self, "metrics_at", float("-inf")) >= METRICS_EVERY_SECONDS:
            self.metrics_at = now
            lag_metric_log()
            liveness.beats_forget(now=timezone.now())
        reaped = leases.leases_reap(now=timezone.now())
        if reaped:
            self.stderr.write(f"{reaped} job(s) held by a dead process were freed")
        expired = leases.leases_expire(now=timezone.now())
        if expired:
            self.stderr.write(f"{expired} job(s) with an expired claim or lease were freed")
        if now - getattr(self, "vacuumed_at", float("-inf")) >= leases.CLAIMS_VACUUM_SECONDS:
            self.vacuumed_at = now
            leases.claims_vacuum()
        queued = sum(tasks.dispatch_tick(target_id) for target_id in engine.targets_due())
        return queued + tasks.polls_dispatch() + tasks.probes_dispatch()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.running = False
