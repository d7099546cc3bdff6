"""Demo data for `make run`: a connection on each local mock CRM, and the demo rule set. Safe to run twice."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from crms.models import Connection
from crms.registry import mocks
from crms.services import connection_save
from rules.demo import DEMO_RULES
from rules.models import Rule
from rules.services import rule_set_replace


def _service_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"


class Command(BaseCommand):
    help = "Create the demo connections (on the local mocks) and the demo rule set, if missing."

    def handle(self, *args: Any, **options: Any) -> None:
        for kind, mock in mocks().items():
            existing = Connection.objects.filter(name=kind).first()
            if existing is not None and existing.config:
                self.stdout.write(f"kept connection {kind}")
                continue
            demo = mock.demo(f"{_service_url()}/mock/{kind}")
            connection_save(name=kind, kind=kind, config=demo.config, secrets=demo.secrets)
            self.stdout.write(f"created connection {kind} (local mock)")
            # Only beside the demo connection made here: it may hold secrets the step shares with the mock.
            done = mock.demo_after(_service_url()) if settings.MOCK_CRMS_ENABLED and mock.demo_after else ""
            if done:
                self.stdout.write(done)
        if Rule.objects.exists():
            self.stdout.write(f"kept the {Rule.objects.count()} rules in place")
        else:
            specs = DEMO_RULES + [rule for mock in mocks().values() for rule in mock.demo_rules]
            version = rule_set_replace(specs=specs, actor="load_demo")
            self.stdout.write(f"loaded {len(specs)} demo rules (rule set v{version})")
