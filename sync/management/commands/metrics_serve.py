"""Serve /metrics for a task that has no web server (the django-q2 workers): run it beside qcluster."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import start_http_server

from recordsync.scrape import registry_for_scrape


class Command(BaseCommand):
    help = (
        "Serve this task's counters on --port for Prometheus. The worker processes count in "
        "PROMETHEUS_MULTIPROC_DIR, which must be set (the same dir) for qcluster and this command."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=9108, help="Port to listen on (default 9108)")
        parser.add_argument("--address", default="0.0.0.0", help="Address to bind (default all)")  # noqa: S104

    def handle(self, *args: Any, **options: Any) -> None:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise CommandError("PROMETHEUS_MULTIPROC_DIR is not set: the workers' counts would be invisible here")
        # Database gauges are the web's to serve: one source for them, whatever is scraped.
        server, thread = start_http_server(
            options["port"], options["address"], registry=registry_for_scrape(with_database=False)
        )
        self.stdout.write(f"serving worker metrics on {options['address']}:{options['port']}/metrics")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        server.shutdown()
        thread.join(timeout=5)
