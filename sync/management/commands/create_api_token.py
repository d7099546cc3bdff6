"""Create (or reuse) a user and print a new API token: one line, nothing else, for scripts."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sync.api.auth import ANY_SOURCE, api_token_create
from sync.models import DEFAULT_SCOPES, DEFAULT_SOURCES, TokenScope


class Command(BaseCommand):
    help = "Create USERNAME if needed and print a new API token (stored hashed; shown only now)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (rules, config, admin).")
        parser.add_argument(
            "--scope",
            action="append",
            choices=TokenScope.values,
            dest="scopes",
            help=f"What the token may do; repeat for several (default: {', '.join(DEFAULT_SCOPES)}).",
        )
        parser.add_argument(
            "--source",
            action="append",
            dest="sources",
            help=f"A `source` its events may carry; repeat for several, {ANY_SOURCE!r} for any "
            f"(default: {', '.join(DEFAULT_SOURCES)}).",
        )

    def handle(
        self,
        *args: Any,
        username: str,
        staff: bool,
        scopes: list[str] | None,
        sources: list[str] | None,
        **options: Any,
    ) -> None:
        try:
            token = api_token_create(username=username, staff=staff, scopes=scopes, sources=sources)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(token)
