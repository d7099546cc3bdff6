"""Create (or reuse) a user and print a new API token: one line, nothing else, for scripts."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from sync.auth import api_token_create


class Command(BaseCommand):
    help = "Create USERNAME if needed and print a new API token (stored hashed; shown only now)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (rules, config, admin).")

    def handle(self, *args: Any, username: str, staff: bool, **options: Any) -> None:
        token = api_token_create(username=username, staff=staff)
        self.stdout.write(token)
