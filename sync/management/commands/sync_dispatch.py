"""The dispatcher loop: about once a second, queue every ready batch and every due poll, and
expire lost leases.

Safe to run on several machines at once: every claim is a conditional update. SIGTERM or
Ctrl-C stops it between two passes.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from django.utils import timezone

from sync import engine, tasks
from sync.models import SyncJob

logger = logging.getLogger("recordsync.dispatch")


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
        expired = engine.leases_expire(now=timezone.now())
        if expired:
            self.stderr.write(f"{expired} job(s) with an expired lease went back to pending")
        targets = SyncJob.objects.filter(state__in=engine.DUE_STATES, target__enabled=True)
        queued = sum(
            tasks.dispatch_tick(target_id) for target_id in targets.values_list("target_id", flat=True).distinct()
        )
        return queued + tasks.polls_dispatch()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.running = False
