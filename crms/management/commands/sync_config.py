"""Export or import connections and rules as JSON (secrets only as environment references)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.exceptions import ValidationError

from crms.config_io import config_export, config_import
from recordsync.errors import flatten_errors


class Command(BaseCommand):
    help = "export FILE | import FILE [--dry-run]: connections and rules as JSON, for version control ('-': stdio)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["export", "import"])
        parser.add_argument("file")
        parser.add_argument("--dry-run", action="store_true", help="import: validate and show changes, write nothing")

    def handle(self, *args: Any, action: str, file: str, dry_run: bool, **options: Any) -> None:
        if action == "export":
            self._export(file)
        else:
            self._import(file, dry_run)

    def _export(self, file: str) -> None:
        document, to_set = config_export()
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        if file == "-":
            self.stdout.write(text, ending="")
        else:
            Path(file).write_text(text)
            self.stderr.write(f"wrote {len(document['connections'])} connection(s) to {file}")
        for name in to_set:
            self.stderr.write(f"note: a secret was stored as a value; set ${name} where you import this file")

    def _import(self, file: str, dry_run: bool) -> None:
        raw = sys.stdin.read() if file == "-" else Path(file).read_text()
        try:
            changes = config_import(json.loads(raw), dry_run=dry_run)
        except (ValueError, KeyError) as exc:
            raise CommandError(f"{file}: {exc}") from exc
        except ValidationError as exc:
            problems = "; ".join(f"{e['field']}: {e['message']}" for e in flatten_errors(exc.detail))
            raise CommandError(f"{file}: nothing imported: {problems}") from exc
        for line in changes:
            self.stdout.write(("would " if dry_run else "") + line)
