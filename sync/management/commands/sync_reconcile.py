"""Compare every record of the CRMs with the record links and queue the creates, updates and deletes
polling missed (`--dry-run`: report them and write nothing).

Safe to run twice: what one run queues is captured as events and links, so the next run finds
those records unchanged, already captured or already deleted.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from crms.models import Connection
from sync.inbound.changes import readable_objects
from sync.inbound.reconcile import ACTIONS, DEFAULT_SAMPLES, breaker_closed, reconcile
from sync.models import ReconcileRun


class Command(BaseCommand):
    help = "Reconcile the CRMs with the record links: queue missing creates, updates and deletes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--connection", help="Only this connection (default: every enabled readable one)")
        parser.add_argument("--object", dest="object_type", help="Only this object, as the connection names it")
        parser.add_argument("--dry-run", action="store_true", help="Report what would be queued; write nothing")
        parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="Sample ids shown per action")

    def handle(
        self, *args: Any, connection: str | None, object_type: str | None, dry_run: bool, samples: int, **options: Any
    ) -> None:
        if samples < 0:
            raise CommandError("--samples: must be 0 or more")
        failed: list[str] = []
        for target, name in _pairs(connection, object_type):
            label = f"{target.name} {name}"
            if not breaker_closed(target):
                self.stdout.write(f"{label}: skipped, the connection's circuit breaker is not closed")
                continue
            with tqdm(desc=label, unit="page", file=self.stderr) as progress:

                def advance(pages: int, records: int, bar: tqdm[Any] = progress) -> None:
                    bar.update(1)
                    bar.set_postfix(records=records)

                try:
                    run = reconcile(
                        connection=target, object_type=name, dry_run=dry_run, samples=samples, on_page=advance
                    )
                except Exception as exc:
                    failed.append(label)
                    self.stdout.write(f"{label}: failed: {type(exc).__name__}: {exc}")
                    continue
            self.stdout.write(_table(label, run))
        if failed:
            raise CommandError(f"{len(failed)} reconcile(s) failed: {', '.join(failed)}")


def _pairs(connection: str | None, object_type: str | None) -> list[tuple[Connection, str]]:
    """The (connection, object) pairs to reconcile; a name that matches nothing names its option."""
    connections = list(Connection.objects.filter(enabled=True).order_by("name"))
    if connection:
        connections = [c for c in connections if c.name == connection]
        if not connections:
            raise CommandError(f"--connection: no enabled connection named {connection!r}")
        if not readable_objects(connections[0]):
            raise CommandError(f"--connection: {connection!r} is not read from (its connector is write-only)")
    pairs = [(c, name) for c in connections for name in readable_objects(c) if object_type in (None, name)]
    if object_type and not pairs:
        known = sorted({name for c in connections for name in readable_objects(c)})
        raise CommandError(
            f"--object: {object_type!r} is not read from {connection or 'any connection'}; "
            f"known: {', '.join(known) or 'none'}"
        )
    return pairs


def _table(label: str, run: ReconcileRun) -> str:
    kind = "dry run, nothing queued" if run.dry_run else f"run {run.pk}, queued"
    report = run.report
    lines = [f"{label} ({kind}): {report.get('pages', 0)} page(s), {report.get('records', 0)} record(s)"]
    lines.append(f"  {'action':<20} {'count':>7}  sample ids")
    for action in ACTIONS:
        ids = ", ".join(report.get("samples", {}).get(action, []))
        lines.append(f"  {action:<20} {run.counts.get(action, 0):>7}  {ids}".rstrip())
    if report.get("capture"):
        lines.append("  capture: " + ", ".join(f"{k} {v}" for k, v in report["capture"].items()))
    return "\n".join(lines)
