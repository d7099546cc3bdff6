"""Re-encrypt every secret at rest under the newest key of RECORDSYNC_SECRETS_KEYS. Safe to run twice."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from crms.rotation import rotate_all, stale_rows


class Command(BaseCommand):
    help = (
        "Re-encrypt connection secrets and connector state under the first key of RECORDSYNC_SECRETS_KEYS "
        "(and seal state stored in plain JSON). Put the new key first, run this, then drop the old key. "
        "--dry-run lists what would change."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List the rows not under the newest key")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        rows = list(stale_rows())
        if dry_run:
            for row in rows:
                self.stdout.write(f"would re-encrypt {row.label}: {row.why}")
            self.stdout.write(f"would re-encrypt {len(rows)} row(s); nothing changed (--dry-run)")
            return
        with tqdm(total=len(rows), unit="row", disable=not rows, file=self.stderr) as progress:
            done = rotate_all(rows, on_each=lambda row: progress.update(1))
        self.stdout.write(f"re-encrypted {done} row(s); every secret is under the newest key")
