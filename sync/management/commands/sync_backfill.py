"""Send every record in range from System A (its stored events) or a CRM to one target, through the
sync pipeline, with a progress bar. Resumable after Ctrl-C or a crash; --dry-run writes nothing.
Safe to run twice: a second copy of a running backfill is refused, a finished one starts afresh.
See docs/backfill.md."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from crms.base import ConnectorError
from sync.delivery.engine import batch_size_for
from sync.inbound.backfill import backfill_run, backfill_start, run_owner
from sync.inbound.backfill_plan import (
    BULK_CALLS_PER_JOB,
    DEFAULT_BATCH,
    BackfillRefused,
    Plan,
    RunLost,
    backfill_plan,
    bulk_threshold,
    bulk_writer,
    calls_per_record,
    plan_total,
    since_parse,
)
from sync.inbound.backfill_preview import Preview, backfill_job_states, backfill_preview
from sync.models import BackfillRun

ACTIONS = ("create", "update", "delete", "unchanged")


class Command(BaseCommand):
    help = (
        "Backfill one object from System A's stored events (--from system_a) or a CRM connection to a target, "
        "through the sync pipeline. Resumes an unfinished run; --dry-run counts and writes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from",
            dest="source",
            required=True,
            help="system_a (replay the latest state it sent of each record) or a connection to read, e.g. salesforce",
        )
        parser.add_argument("--to", dest="target", required=True, help="The connection to send the records to")
        parser.add_argument(
            "--object",
            dest="object_type",
            required=True,
            help="The object, as the source names it (System A: e.g. contact; Salesforce: Contact)",
        )
        parser.add_argument(
            "--since",
            help="Only records changed since this date (UTC) or ISO-8601 time, e.g. 2026-11-01 or 2026-11-01T09:00:00Z",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be sent; write nothing")
        parser.add_argument("--restart", action="store_true", help="Start over instead of resuming an unfinished run")
        parser.add_argument(
            "--batch",
            type=int,
            default=DEFAULT_BATCH,
            help=f"Records per page and checkpoint (System A) and per Bulk job (default "
            f"{DEFAULT_BATCH}); a CRM source pages as its API does",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            plan = backfill_plan(
                source=options["source"],
                target=options["target"],
                object_type=options["object_type"],
                since=since_parse(options["since"]),
                batch=options["batch"],
            )
            if options["dry_run"]:
                self._preview(plan)
                return
            started = backfill_start(plan=plan, restart=options["restart"], owner=run_owner())
        except BackfillRefused as exc:
            raise CommandError(str(exc)) from exc
        run = started.run
        if started.resumed:
            where = f"after record {run.cursor}" if plan.source_connection is None else "from its saved cursor"
            self.stdout.write(
                f"resuming run {run.pk} {where}: {run.processed} record(s) done"
                f"{f' (last stop: {started.stopped_by})' if started.stopped_by else ''}"
            )
        with tqdm(
            total=run.total,
            initial=run.processed,
            unit="record",
            file=self.stderr,
            desc=f"{plan.source} → {plan.target.name} {plan.object_type}",
        ) as progress:
            try:
                backfill_run(run=run, plan=plan, progress=progress.update)
            except KeyboardInterrupt:
                raise CommandError(
                    f"interrupted: run {run.pk} stopped after {run.processed} record(s); "
                    "run the same command again to resume",
                    returncode=130,
                ) from None
            except (ConnectorError, RunLost) as exc:
                raise CommandError(
                    f"run {run.pk} stopped after {run.processed} record(s): {exc}; run the same command again to resume"
                ) from exc
        self._summary(run, plan)

    def _preview(self, plan: Plan) -> None:
        with tqdm(
            total=plan_total(plan), unit="record", file=self.stderr, desc=f"dry run {plan.source} → {plan.target.name}"
        ) as progress:
            preview = backfill_preview(plan=plan, progress=progress.update)
        since = f" changed since {plan.since.isoformat()}" if plan.since else ""
        self.stdout.write(
            f"dry run, nothing written: {preview.records} {plan.object_type} record(s){since} "
            f"from {plan.source} to {plan.target.name}"
        )
        extra = sorted(name for name in preview.actions if name not in ACTIONS)
        for name in (*ACTIONS, *extra):
            self.stdout.write(f"  {name:<13} {preview.actions[name]}{_meaning(name)}")
        self.stdout.write(f"API calls: {_reads(plan, preview)}; {_pushes(plan, preview)}")

    def _summary(self, run: BackfillRun, plan: Plan) -> None:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(run.counts.items()) if count) or "nothing"
        self.stdout.write(
            f"run {run.pk} done: {run.processed} record(s) of {plan.object_type} from {plan.source} "
            f"to {plan.target.name}: {counts}"
        )
        states = backfill_job_states(run)
        jobs = ", ".join(f"{state} {count}" for state, count in sorted(states.items())) or "none"
        self.stdout.write(
            f"jobs in {plan.target.name} now: {jobs}"
            f"{' (pending ones are sent by the engine)' if states.get('pending') else ''}"
        )
        self.stdout.write(f"API calls made by this backfill: {run.api_calls}")


def _meaning(action: str) -> str:
    return {
        "unchanged": "  (the target already holds it: the engine sends nothing)",
        "never_synced": "  (a delete of a record the target never received: nothing to do)",
        "echo": "  (our own write read back: recorded, sent nowhere)",
        "not_routed": "  (a rule skips this target, or the record was deleted)",
        "refused": "  (would fail before any call: a required field is missing)",
    }.get(action, "")


def _reads(plan: Plan, preview: Preview) -> str:
    if plan.source_connection is None:
        return "0 to read (System A's events are stored here)"
    return f"{preview.reads} made to read {plan.source}"


def _pushes(plan: Plan, preview: Preview) -> str:
    per_call = "one record" if calls_per_record(plan.target) else f"up to {batch_size_for(plan.target)} records"
    rest = f"about {preview.pushes} to push by REST ({per_call} per call)"
    if not preview.bulk:
        return rest
    writer = bulk_writer(plan.target)
    label = writer.bulk_label() if writer else "bulk"
    bulk = (
        f"about {preview.bulk_jobs * BULK_CALLS_PER_JOB} for {preview.bulk_jobs} {label} job(s) of up to "
        f"{plan.batch} records for the creates ({preview.records} records is above bulk_threshold "
        f"{bulk_threshold(plan.target)})"
    )
    return f"{bulk}, and {rest} for the rest"
