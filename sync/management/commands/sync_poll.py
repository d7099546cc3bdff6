"""Capture changes made in the CRMs: poll each readable connection from its saved cursor.

Safe to run twice, and beside a running poller: each (connection, object) cursor is held by one
poller at a time, saved after every page, and a change already captured is never captured again.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from crms.models import Connection
from sync.delivery.engine import throttled_connector
from sync.inbound.changes import poll, readable_objects
from sync.models import Lane


class Command(BaseCommand):
    help = "Poll the CRMs for changes from the saved cursors and turn them into events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--connection", help="Only this connection (default: every enabled readable one)")
        parser.add_argument("--object", dest="object_type", help="Only this object, as the connection names it")
        parser.add_argument("--pages", type=int, default=None, help="Stop after this many pages per object")

    def handle(
        self, *args: Any, connection: str | None, object_type: str | None, pages: int | None, **options: Any
    ) -> None:
        connections = Connection.objects.filter(enabled=True).order_by("name")
        if connection:
            connections = connections.filter(name=connection)
            if not connections.exists():
                raise CommandError(f"no enabled connection named {connection!r}")
        owner = f"sync_poll-{uuid.uuid4().hex[:12]}"
        for target in connections:
            objects = [object_type] if object_type else readable_objects(target)
            for name in objects:
                with tqdm(desc=f"{target.name} {name}", unit="page", file=self.stderr) as progress:
                    result = poll(
                        connection=target,
                        object_type=name,
                        connector=throttled_connector(target, lane=Lane.READ),
                        max_pages=pages,
                        owner=owner,
                    )
                    progress.update(result.pages)
                counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())) or "no changes"
                self.stdout.write(f"{target.name} {name}: {result.skipped or f'{result.pages} page(s), {counts}'}")
