"""Print a random value for every secret setting the local mocks declare, as .env lines (`make run` writes them).

Only prints: running it twice changes nothing. Each mock lists its secrets in its package (crms/*/mock_entry.py),
so a new mock's secrets are randomised without editing the Makefile.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand

from crms.registry import mocks


class Command(BaseCommand):
    help = "Print random values for the local mock CRMs' secret settings, as .env lines."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write("# Random secrets for the local mock CRMs (crms/*/mock_entry.py)")
        for kind, mock in mocks().items():
            if mock.secrets:
                self.stdout.write(f"# {kind}")
            for name in mock.secrets:
                self.stdout.write(f"{name}={secrets.token_urlsafe(32)}")
