"""Retry failed (and waiting) jobs by filter, with a progress bar. Safe to run twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from tqdm import tqdm

from sync.delivery.retry import chunked_ids, jobs_retry, retry_candidates
from sync.models import SyncJob

CHUNK = 500


class Command(BaseCommand):
    help = "Send failed and retrying jobs back to pending, by filter. --dry-run counts them and changes nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--target", help="Only jobs for this connection")
        parser.add_argument("--object-type", help="Only this object type")
        parser.add_argument("--error-code", help="Only jobs whose last error has this code, e.g. UNABLE_TO_LOCK_ROW")
        parser.add_argument("--since", help="Only jobs that changed since this ISO-8601 time, e.g. 2026-11-25T09:00Z")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be retried; change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        since = _parse_since(options["since"])
        jobs = retry_candidates(
            target=options["target"], object_type=options["object_type"], error_code=options["error_code"], since=since
        )
        total = jobs.count()
        if options["dry_run"]:
            for code, count in _by_error(jobs):
                self.stdout.write(f"would retry {count} job(s) with last error {code or '(none)'}")
            self.stdout.write(f"would retry {total} job(s) in all; nothing changed (--dry-run)")
            return
        retried = 0
        with tqdm(total=total, unit="job", disable=total == 0, file=self.stderr) as progress:
            for ids in chunked_ids(jobs, CHUNK):
                retried += len(jobs_retry(jobs=SyncJob.objects.filter(id__in=ids), actor="sync_retry"))
                progress.update(len(ids))
        self.stdout.write(f"retried {retried} job(s)")


def _parse_since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(f"--since {raw!r} is not an ISO-8601 time, e.g. 2026-11-25T09:00:00Z") from exc
    if value.tzinfo is None:
        raise CommandError("--since needs a UTC offset, e.g. 2026-11-25T09:00:00Z")
    return value


def _by_error(jobs: Any) -> list[tuple[str, int]]:
    rows = jobs.values("last_error_code").annotate(n=Count("id")).order_by("-n")
    return [(row["last_error_code"], row["n"]) for row in rows]
