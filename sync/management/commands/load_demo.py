"""Demo data for `make run`: the three connections the README tour uses. Safe to run twice."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from crms.models import Connection

DEMO_CONNECTIONS = [("salesforce", "salesforce"), ("outreach", "outreach"), ("system_a", "system_a")]


class Command(BaseCommand):
    help = "Create the demo connections (salesforce, outreach, system_a) if they are missing."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, kind in DEMO_CONNECTIONS:
            _, created = Connection.objects.get_or_create(name=name, defaults={"kind": kind})
            self.stdout.write(f"{'created' if created else 'kept'} connection {name}")
