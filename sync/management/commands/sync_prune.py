"""Prune old, finished history (events, attempts, conflicts, runs, ...) with a progress bar and a table of
counts per table. --dry-run counts and deletes nothing. Safe to run twice. See docs/retention.md."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from sync.ops import retention

MAX_BATCH = 100_000


class Command(BaseCommand):
    help = (
        "Delete finished events, attempts, conflicts, alerts, breaker history, throttle calls and runs older than "
        "--older-than days (default SYNC_RETENTION_DAYS). Failed and held work, record links, cursors, delete "
        "tombstones and events inside the idempotency window are kept. --dry-run counts and deletes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing")
        parser.add_argument(
            "--older-than",
            metavar="DAYS",
            help="Prune rows older than this many days (default: SYNC_RETENTION_DAYS, 30)",
        )
        parser.add_argument(
            "--batch",
            metavar="N",
            help=f"Rows per delete, each its own short transaction (default {retention.BATCH_SIZE})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = _whole_number("--older-than", options["older_than"], retention.retention_days(), maximum=None)
        batch = _whole_number("--batch", options["batch"], retention.BATCH_SIZE, maximum=MAX_BATCH)
        now = timezone.now()
        before = {label: apps.get_model(label).objects.count() for label in retention.LABELS}
        planned = retention.prune(now=now, older_than_days=days, dry_run=True, batch_size=batch)
        if options["dry_run"]:
            self._table(before, planned, dry_run=True)
            self.stdout.write(
                f"would prune {sum(planned.values())} row(s) older than {days} day(s); nothing changed (--dry-run)"
            )
            return
        total = sum(planned.values())
        with tqdm(total=total, unit="row", disable=total == 0, file=self.stderr) as progress:
            pruned = retention.prune(
                now=now, older_than_days=days, dry_run=False, batch_size=batch, progress=progress.update
            )
        self._table(before, pruned, dry_run=False)
        self.stdout.write(f"pruned {sum(pruned.values())} row(s) older than {days} day(s)")

    def _table(self, before: dict[str, int], counts: dict[str, int], *, dry_run: bool) -> None:
        heading = ("table", "rows", "would prune" if dry_run else "pruned", "would be left" if dry_run else "left")
        rows = [(label, before[label], counts[label], before[label] - counts[label]) for label in retention.LABELS]
        width = max(len(label) for label in retention.LABELS)
        self.stdout.write(f"{heading[0]:<{width}}  {heading[1]:>12}  {heading[2]:>12}  {heading[3]:>13}")
        for label, had, gone, left in rows:
            self.stdout.write(f"{label:<{width}}  {had:>12}  {gone:>12}  {left:>13}")


def _whole_number(option: str, raw: str | None, default: int, *, maximum: int | None) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(f"{option} {raw!r} is not a whole number, e.g. {option} {default}") from None
    if value < 1 or (maximum is not None and value > maximum):
        bounds = f"between 1 and {maximum}" if maximum is not None else "at least 1"
        raise CommandError(f"{option} must be {bounds}, not {value}")
    return value
