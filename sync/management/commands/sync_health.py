"""Liveness for a supervisor: exit 0 while this host's workers (or dispatcher) make progress, 1 when not.

    python manage.py sync_health --role worker        # compose: `... || kill 1`; ECS: container HealthCheck
    python manage.py sync_health --role dispatcher

A worker cluster is alive while one of its workers beat within the last 30 s, or holds a task taken
within its timeout (sync/delivery/liveness.py). With the database unreachable the answer is 0 and a warning:
restarting the process would not bring the database back (the API answers 503 meanwhile).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from sync.delivery import liveness


class Command(BaseCommand):
    help = "Exit 1 when no worker (or dispatcher) on this host makes progress: for a supervisor's health check."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", choices=liveness.ROLES, required=True)
        parser.add_argument("--host", default=None, help="Whose processes (default: this host)")

    def handle(self, *args: Any, role: str, host: str | None, **options: Any) -> None:
        try:
            verdict = liveness.health(role=role, host=host or liveness.host_name(), now=timezone.now())
        except DatabaseError as exc:
            self.stderr.write(f"database unreachable, liveness unknown: {exc}")
            return
        if not verdict.ok:
            raise CommandError(verdict.reason)
        self.stdout.write(verdict.reason)
