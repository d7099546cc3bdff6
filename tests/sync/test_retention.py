"""Retention: old, finished history goes in batches; failed and held work, the current state of every
record, delete tombstones, record links, cursors and events inside the idempotency window stay."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection as db
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from crms.models import Connection
from sync import tasks
from sync.delivery import dispatch
from sync.ingest.services import EventInput, event_ingest
from sync.models import (
    Alert,
    AlertKind,
    AlertState,
    AttemptOutcome,
    BackfillRun,
    BreakerTransition,
    ConflictState,
    InboundCursor,
    JobState,
    QuotaSample,
    ReconcileRun,
    RecordLink,
    RecordRead,
    RunState,
    SyncAttempt,
    SyncConflict,
    SyncEvent,
    SyncJob,
    ThrottleCall,
    ThrottleLimit,
)
from sync.ops import retention

pytestmark = pytest.mark.django_db

OLD = timedelta(days=40)  # past the default 30 days of retention and the 7 of the idempotency window
START = timezone.now() - timedelta(hours=6)  # every change happened after this, a minute apart per step


def post(
    api: Any, operation: str = "update", record_id: str = "c-1", *, step: int, key: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "operation": operation,
        "record_id": record_id,
        "object_type": "contact",
        "occurred_at": (START + timedelta(minutes=step)).isoformat(),
        **extra,
    }
    if operation in ("create", "update") and "data" not in body:
        body["data"] = {"email": f"{record_id}-{step}@example.com"}
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = api.post("/v1/sync/", data=json.dumps(body), content_type="application/json", **headers)
    assert response.status_code == 202, response.content
    answer: dict[str, Any] = response.json()
    return answer


def age(delta: timedelta, **scope: Any) -> None:
    """Move events back in time, keeping their order: received (and happened) `delta` earlier."""
    SyncEvent.objects.filter(**scope).update(received_at=F("received_at") - delta, occurred_at=F("occurred_at") - delta)


def finish(state: str = JobState.SYNCED, **scope: Any) -> None:
    SyncJob.objects.filter(**scope).update(state=state)


def prune(days: int = 30, *, dry_run: bool = False, **kwargs: Any) -> dict[str, int]:
    return retention.prune(now=timezone.now(), older_than_days=days, dry_run=dry_run, **kwargs)


def ids(**scope: Any) -> set[uuid.UUID]:
    return set(SyncEvent.objects.filter(**scope).values_list("pk", flat=True))


def event_of(answer: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(answer["event_id"])


def row_counts() -> dict[str, int]:
    return {label: apps.get_model(label).objects.count() for label in retention.LABELS}


def attempts_for(job: SyncJob, started: list[datetime]) -> list[int]:
    rows = [
        SyncAttempt(job=job, version=job.version, started_at=at, finished_at=at, outcome=AttemptOutcome.SUCCESS)
        for at in started
    ]
    return [row.pk for row in SyncAttempt.objects.bulk_create(rows)]


# --- events --------------------------------------------------------------------------------------


def test_old_superseded_events_of_a_synced_record_go_and_its_latest_stays(api, connections):
    answers = [post(api, "create", step=0), post(api, step=1), post(api, step=2), post(api, step=3)]
    age(OLD)
    finish()

    counts = prune()

    assert counts["sync.SyncEvent"] == 3
    assert ids() == {event_of(answers[-1])}
    status = api.get("/v1/sync/status/c-1").json()
    assert [e["event_id"] for e in status["events"]] == [answers[-1]["event_id"]]
    assert {t["state"] for t in status["targets"]} == {"synced"}


def test_events_younger_than_the_age_stay(api, connections):
    for step in range(3):
        post(api, step=step)
    age(timedelta(days=20))
    finish()

    assert prune()["sync.SyncEvent"] == 0
    assert prune(days=10)["sync.SyncEvent"] == 2


def test_events_inside_the_idempotency_window_stay_and_a_repeat_still_gets_its_first_answer(api, connections, settings):
    settings.SYNC_IDEMPOTENCY_WINDOW_DAYS = 7
    first = post(api, "create", step=0, key="k-0")
    post(api, step=1)
    post(api, step=2)
    age(timedelta(days=3))
    finish()

    assert prune(days=1)["sync.SyncEvent"] == 0  # older than the age, but inside the window

    repeat = api.post(
        "/v1/sync/",
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k-0",
        data=json.dumps(
            {
                "operation": "create",
                "record_id": "c-1",
                "object_type": "contact",
                "occurred_at": START.isoformat(),
                "data": {"email": "c-1-0@example.com"},
            }
        ),
    )
    assert repeat.headers["Idempotent-Replayed"] == "true" and repeat.json() == first
    age(timedelta(days=5))
    assert prune(days=1)["sync.SyncEvent"] == 2  # 8 days: past the window


def test_an_event_a_job_still_points_at_stays_even_when_later_events_supersede_it(api, connections):
    """The job of a target a later change did not go to still has the create as its last event:
    without it that job would fail with EVENT_MISSING."""
    create = post(api, "create", step=0)
    post(api, step=1, targets=["outreach"])
    last = post(api, step=2, targets=["outreach"])
    age(OLD)
    finish()

    assert prune()["sync.SyncEvent"] == 1  # only the middle update
    salesforce_job = SyncJob.objects.get(target__name="salesforce")
    assert salesforce_job.last_event_id == event_of(create)
    assert ids() == {event_of(create), event_of(last)}
    assert not SyncJob.objects.filter(last_event__isnull=True).exists()


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.HELD, JobState.RETRYING, JobState.PENDING])
def test_the_event_of_unfinished_work_stays(api, connections, state):
    post(api, "create", step=0)
    stuck = post(api, step=1, targets=["salesforce"])
    post(api, step=2, targets=["outreach"])
    age(OLD)
    finish(target__name="outreach")
    finish(state, target__name="salesforce")

    prune()

    assert SyncJob.objects.get(target__name="salesforce").last_event_id == event_of(stuck)
    assert event_of(stuck) in ids()


def test_the_latest_delete_of_a_record_stays_and_still_refuses_a_late_change(api, connections):
    post(api, "create", step=0)
    first_delete = post(api, "delete", step=1)
    tombstone = post(api, "delete", step=2)
    post(api, "create", step=3)  # System A re-creates the record, then changes it
    current = post(api, step=4)
    age(OLD)
    finish()

    counts = prune()

    # The first create and the first delete are history; the latest delete outlives even the re-create.
    assert counts["sync.SyncEvent"] == 3
    assert ids(operation="delete") == {event_of(tombstone)}
    assert event_of(first_delete) not in ids() and event_of(current) in ids()
    late = post(api, step=5, source="salesforce")  # a CRM change after a delete never revives it
    assert late["routing"]["mode"] == "skipped" and "deleted" in late["routing"]["reason"]
    assert late["routing"]["deleted_by"] == str(event_of(tombstone))


def test_a_delete_is_never_superseded_by_a_change(api, connections):
    post(api, "delete", step=0)
    post(api, "create", step=1)
    post(api, step=2)
    age(OLD)
    finish()

    prune()

    assert SyncEvent.objects.filter(operation="delete").count() == 1


def test_each_records_latest_event_and_latest_change_are_the_same_after_a_prune(api):
    """What backfill (latest state), reconcile (already deleted?) and status read of a record. No
    enabled connection: no job points at any of these events, only being the latest keeps them."""
    Connection.objects.create(name="salesforce", kind="salesforce", enabled=False)
    for record in ("c-1", "c-2", "c-3"):
        post(api, "create", record, step=0)
        post(api, "update", record, step=1)
        post(api, "read", record, step=2)
    post(api, "update", "c-2", step=3, source="salesforce")  # another source: its own history
    post(api, "update", "c-2", step=-5)  # arrives late, happened earliest: superseded, not current
    post(api, "delete", "c-3", step=4)
    post(api, "create", "c-4", step=0)
    post(api, "read", "c-4", step=1)  # a read asks; it is never the record's state
    age(OLD)
    assert not SyncJob.objects.exists()

    def latest() -> dict[tuple[str, str], tuple[Any, Any]]:
        found = {}
        for record, source in SyncEvent.objects.values_list("record_id", "source").distinct():
            events = SyncEvent.objects.filter(record_id=record, source=source).order_by("-occurred_at", "-received_at")
            found[(record, source)] = (events.first().pk, events.exclude(operation="read").first().pk)  # type: ignore[union-attr]
        return found

    before = latest()

    assert prune()["sync.SyncEvent"] > 0
    assert latest() == before


def test_events_of_an_open_or_recent_conflict_stay_and_of_an_old_resolved_one_go(api, connections):
    steps = {
        name: (post(api, "create", name, step=0), post(api, "update", name, step=1), post(api, step=2, record_id=name))
        for name in ("open", "recent", "old")
    }
    age(OLD)
    finish()
    now = timezone.now()
    for name, resolved_at in (("open", None), ("recent", now - timedelta(days=2)), ("old", now - OLD)):
        SyncConflict.objects.create(
            record_id=name,
            object_type="contact",
            connection=connections["salesforce"],
            external_object="Contact",
            external_id=f"003{name}",
            policy="hold",
            detected_at=now - OLD,
            resolved_at=resolved_at,
            state=ConflictState.RESOLVED if resolved_at else ConflictState.OPEN,
            system_a_event_id=event_of(steps[name][0]),
            crm_event_id=event_of(steps[name][1]),
        )

    counts = prune()

    assert counts["sync.SyncConflict"] == 1
    assert set(SyncConflict.objects.values_list("record_id", flat=True)) == {"open", "recent"}
    for name in ("open", "recent"):
        assert {event_of(answer) for answer in steps[name]} <= ids()
    assert ids(record_id="old") == {event_of(steps["old"][2])}


def test_a_read_still_waiting_for_its_result_stays_and_a_done_one_goes_with_its_rows(api, connections):
    waiting, done = post(api, "read", step=0), post(api, "read", step=1)
    post(api, "read", step=2)
    for answer, outcome in ((waiting, ""), (done, "captured")):
        RecordRead.objects.create(
            event_id=event_of(answer),
            connection=connections["salesforce"],
            external_object="Contact",
            external_id="003x",
            outcome=outcome,
        )
    age(OLD)

    planned = prune(dry_run=True)
    counts = prune()

    assert (counts["sync.SyncEvent"], counts["sync.RecordRead"]) == (1, 1) and planned == counts
    assert event_of(waiting) in ids() and event_of(done) not in ids()
    assert RecordRead.objects.get().outcome == ""


# --- attempts and the other tables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "left"),
    [
        (JobState.SYNCED, 1),
        (JobState.SKIPPED, 1),  # the job's latest attempt: the one status shows
        (JobState.FAILED, 3),
        (JobState.HELD, 3),
        (JobState.RETRYING, 3),
        (JobState.PENDING, 3),
        (JobState.IN_FLIGHT, 3),
    ],
)
def test_old_attempts_go_only_when_their_job_is_done(api, connections, state, left):
    post(api, "create", step=0)
    old_job, recent_job = SyncJob.objects.get(target__name="salesforce"), SyncJob.objects.get(target__name="outreach")
    now = timezone.now()
    last_old = attempts_for(old_job, [now - timedelta(days=50), now - timedelta(days=45), now - OLD])[-1]
    attempts_for(recent_job, [now - timedelta(days=20), now - timedelta(days=1)])
    finish(state)

    counts = prune()

    assert SyncAttempt.objects.filter(job=old_job).count() == left and last_old in attempt_ids()
    assert SyncAttempt.objects.filter(job=recent_job).count() == 2  # younger than the age, finished or not
    assert counts["sync.SyncAttempt"] == 3 - left


def attempt_ids() -> set[int]:
    return set(SyncAttempt.objects.values_list("pk", flat=True))


def test_record_links_cursors_and_jobs_are_never_pruned(api, connections):
    post(api, "create", step=0)
    age(OLD)
    finish()
    long_ago = timezone.now() - timedelta(days=3650)
    RecordLink.objects.create(
        object_type="contact",
        record_id="c-1",
        system=connections["salesforce"],
        external_object="Contact",
        external_id="003A",
        synced_at=long_ago,
        created_at=long_ago,
    )
    InboundCursor.objects.create(
        connection=connections["salesforce"], object_type="Contact", cursor="x", polled_at=long_ago
    )
    SyncJob.objects.update(created_at=long_ago, updated_at=long_ago, synced_at=long_ago)

    prune(days=1)

    assert (RecordLink.objects.count(), InboundCursor.objects.count(), SyncJob.objects.count()) == (1, 1, 2)


def test_throttle_calls_go_after_a_day_or_after_a_targets_own_longer_cap(connections):
    now = timezone.now()
    for hours in (72, 30, 20, 1):
        ThrottleCall.objects.create(key="salesforce", at=now - timedelta(hours=hours))

    assert prune(dry_run=True)["sync.ThrottleCall"] == 2
    ThrottleLimit.objects.create(key="salesforce", cap_calls=10, cap_seconds=48 * 3600, cap_until=now + OLD)
    assert prune()["sync.ThrottleCall"] == 1  # the 30-hour-old call is still in the target's 48-hour window
    assert ThrottleCall.objects.count() == 3


def test_breaker_history_goes_except_each_connections_latest_change(connections):
    now = timezone.now()
    for name, days in (("salesforce", 50), ("salesforce", 45), ("outreach", 60), ("outreach", 3)):
        BreakerTransition.objects.create(
            connection=connections[name], at=now - timedelta(days=days), from_state="closed", to_state="open"
        )

    assert prune()["sync.BreakerTransition"] == 2
    remaining = {(t.connection.name, (now - t.at).days) for t in BreakerTransition.objects.all()}
    assert remaining == {("salesforce", 45), ("outreach", 3)}


def test_resolved_alerts_go_after_the_age_and_open_ones_never(connections):
    now = timezone.now()
    rows = [
        ("salesforce", AlertKind.LAG, AlertState.RESOLVED, OLD),
        ("salesforce", AlertKind.FAILURES, AlertState.RESOLVED, timedelta(days=5)),
        ("outreach", AlertKind.LAG, AlertState.OPEN, None),
    ]
    for name, kind, state, resolved in rows:
        Alert.objects.create(
            connection=connections[name],
            kind=kind,
            state=state,
            value=1,
            threshold=1,
            message="m",
            opened_at=now - timedelta(days=90),
            resolved_at=now - resolved if resolved else None,
        )

    assert prune()["sync.Alert"] == 1
    assert set(Alert.objects.values_list("kind", "state")) == {("failures", "resolved"), ("lag", "open")}


def test_finished_reconcile_runs_go_except_the_latest_and_a_running_one_stays(connections):
    now = timezone.now()
    sf = connections["salesforce"]
    for days, state in ((60, RunState.DONE), (50, RunState.FAILED), (45, RunState.RUNNING), (40, RunState.DONE)):
        at = now - timedelta(days=days)
        ReconcileRun.objects.create(
            connection=sf,
            object_type="Contact",
            state=state,
            started_at=at,
            finished_at=None if state == RunState.RUNNING else at,
        )
    ReconcileRun.objects.create(
        connection=sf, object_type="Account", state=RunState.DONE, started_at=now - OLD, finished_at=now - OLD
    )

    assert prune()["sync.ReconcileRun"] == 2
    left = {(r.object_type, r.state, (now - r.started_at).days) for r in ReconcileRun.objects.all()}
    assert left == {("Contact", "running", 45), ("Contact", "done", 40), ("Account", "done", 40)}


def test_finished_backfill_runs_go_but_never_the_latest_of_a_backfill_nor_a_running_one(connections):
    now = timezone.now()
    since = now - timedelta(days=400)

    def run(days: int, state: str, *, target: str = "salesforce", since_: datetime | None = None) -> int:
        started = now - timedelta(days=days)
        return BackfillRun.objects.create(
            source="system_a",
            target=target,
            object_type="contact",
            since=since_,
            state=state,
            started_at=started,
            updated_at=started,
            finished_at=None if state == RunState.RUNNING else started,
        ).pk

    gone = [run(90, RunState.DONE), run(80, RunState.FAILED)]
    latest_failed = run(70, RunState.FAILED)  # the checkpoint `sync_backfill` resumes
    running = run(100, RunState.RUNNING, target="outreach")
    BackfillRun.objects.filter(pk=running).update(finished_at=now - timedelta(days=95))  # resumed after a failure
    run(60, RunState.DONE, target="outreach")
    gone.append(run(90, RunState.DONE, since_=since))
    latest_with_since = run(80, RunState.DONE, since_=since)  # a different backfill: has its own latest

    assert prune()["sync.BackfillRun"] == 3
    left = set(BackfillRun.objects.values_list("pk", flat=True))
    assert {latest_failed, running, latest_with_since} <= left and not left & set(gone)


# --- the run as a whole --------------------------------------------------------------------------


@pytest.fixture
def history(api: Any, connections: dict[str, Connection]) -> None:
    """A bit of everything, old enough to prune, with the rows that must stay mixed in."""
    for record in ("c-1", "c-2", "c-3"):
        for step in range(4):
            post(api, "create" if step == 0 else "update", record, step=step)
    post(api, "delete", "c-3", step=5)
    waiting = post(api, "read", "c-2", step=6)
    done = post(api, "read", "c-2", step=7)
    post(api, "read", "c-2", step=8)
    for answer, outcome in ((waiting, ""), (done, "echo")):
        RecordRead.objects.create(
            event_id=event_of(answer),
            connection=connections["outreach"],
            external_object="prospect",
            external_id="1",
            outcome=outcome,
        )
    age(OLD)
    finish()
    finish(JobState.FAILED, record_id="c-2", target__name="salesforce")
    now = timezone.now()
    for job in SyncJob.objects.all():
        attempts_for(job, [now - timedelta(days=days) for days in (50, 45, 41)])
    for days in (50, 41):
        ThrottleCall.objects.create(key="salesforce", at=now - timedelta(days=days))
        QuotaSample.objects.create(
            key="org",
            connection=connections["salesforce"],
            at=now - timedelta(days=days),
            used=1,
            cap=10,
            period_seconds=1,
        )
        BreakerTransition.objects.create(
            connection=connections["salesforce"], at=now - timedelta(days=days), from_state="closed", to_state="open"
        )
        ReconcileRun.objects.create(
            connection=connections["salesforce"],
            object_type="Contact",
            state=RunState.DONE,
            started_at=now - timedelta(days=days),
            finished_at=now - timedelta(days=days),
        )
        BackfillRun.objects.create(
            source="system_a",
            target="salesforce",
            object_type="contact",
            state=RunState.DONE,
            started_at=now - timedelta(days=days),
            finished_at=now - timedelta(days=days),
        )
    Alert.objects.create(
        connection=connections["salesforce"],
        kind=AlertKind.LAG,
        state=AlertState.RESOLVED,
        value=1,
        threshold=1,
        message="m",
        resolved_at=now - OLD,
    )
    SyncConflict.objects.create(
        record_id="c-1",
        object_type="contact",
        connection=connections["salesforce"],
        external_object="Contact",
        external_id="003",
        policy="hold",
        state=ConflictState.RESOLVED,
        resolved_at=now - OLD,
    )


def test_a_dry_run_writes_nothing_and_counts_exactly_what_the_run_then_deletes(history):
    before = row_counts()

    planned = prune(dry_run=True)

    assert row_counts() == before
    assert all(planned[label] > 0 for label in retention.LABELS), planned  # every table has something to go
    deleted = prune()
    after = row_counts()
    assert deleted == planned
    assert {label: before[label] - after[label] for label in retention.LABELS} == deleted


def test_a_second_run_deletes_nothing(history):
    assert sum(prune().values()) > 0

    assert prune() == dict.fromkeys(retention.LABELS, 0)


def test_small_batches_delete_the_same_rows_and_report_each_batch(history):
    planned = prune(dry_run=True)
    heard: list[int] = []

    deleted = prune(batch_size=2, progress=heard.append)

    assert deleted == planned
    assert sum(heard) == sum(planned.values()) and max(heard) <= 2 + 2  # an event batch takes its reads with it
    assert len(heard) > len([n for n in planned.values() if n])


def test_a_run_out_of_time_stops_between_batches_and_the_next_carries_on(history, monkeypatch):
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(retention, "clock", lambda: float(next(ticks)))
    planned = prune(dry_run=True)

    first = retention.prune_run(now=timezone.now(), older_than_days=30, dry_run=False, batch_size=3, budget_seconds=5)

    assert not first.finished and 0 < sum(first.counts.values()) <= 3
    rest = prune()
    assert {label: first.counts[label] + rest[label] for label in retention.LABELS} == planned


def test_the_scheduled_prune_queues_itself_again_until_the_backlog_is_gone(history, monkeypatch, settings):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 runs a queued task at once, in this process
    monkeypatch.setattr(retention, "BATCH_SIZE", 4)
    ticks = iter(range(0, 100_000, 1000))
    monkeypatch.setattr(retention, "clock", lambda: float(next(ticks)))
    settings.SYNC_RETENTION_DAYS = 30
    planned = prune(dry_run=True)

    first = tasks.prune_scheduled()

    assert 0 < sum(first.values()) < sum(planned.values())  # this run stopped early ...
    assert prune(dry_run=True) == dict.fromkeys(retention.LABELS, 0)  # ... and the runs it queued finished


def test_the_retention_settings_must_be_whole_days(settings):
    settings.SYNC_RETENTION_DAYS = "30"
    with pytest.raises(ImproperlyConfigured, match="SYNC_RETENTION_DAYS"):
        tasks.prune_scheduled()
    settings.SYNC_RETENTION_DAYS = 30
    settings.SYNC_IDEMPOTENCY_WINDOW_DAYS = 0
    with pytest.raises(ImproperlyConfigured, match="SYNC_IDEMPOTENCY_WINDOW_DAYS"):
        prune()


def test_the_daily_schedule_is_installed_by_the_migrations() -> None:
    from django_q.models import Schedule

    row = Schedule.objects.get(name="sync-prune")

    assert (row.func, row.schedule_type, row.repeats) == ("sync.tasks.prune_scheduled", Schedule.DAILY, -1)
    assert import_string(row.func) is tasks.prune_scheduled
    # the path stored before migration sync/0022 still resolves for one release (a task queued under it)
    assert import_string("sync.retention.prune_scheduled") is tasks.prune_scheduled


# --- the command ---------------------------------------------------------------------------------


def command(*args: str) -> str:
    out = StringIO()
    call_command("sync_prune", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def table(output: str) -> dict[str, tuple[int, ...]]:
    rows = [line.split() for line in output.splitlines() if line.startswith("sync.")]
    return {row[0]: tuple(int(n) for n in row[1:]) for row in rows}


def test_the_command_dry_run_prints_the_counts_and_changes_nothing(history):
    before = row_counts()
    planned = prune(dry_run=True)

    output = command("--dry-run")

    assert row_counts() == before
    assert table(output) == {
        label: (before[label], planned[label], before[label] - planned[label]) for label in retention.LABELS
    }
    assert f"would prune {sum(planned.values())} row(s) older than 30 day(s)" in output


def test_the_command_prunes_and_prints_what_is_left(history):
    before = row_counts()
    planned = prune(dry_run=True)

    output = command("--batch", "3", "--older-than", "30")

    assert table(output) == {label: (before[label], planned[label], row_counts()[label]) for label in retention.LABELS}
    assert row_counts() != before and f"pruned {sum(planned.values())} row(s)" in output
    assert "pruned 0 row(s)" in command()


def test_the_command_older_than_narrows_what_goes(history):
    assert table(command("--dry-run", "--older-than", "60"))["sync.SyncEvent"][1] == 0
    assert table(command("--dry-run", "--older-than", "35"))["sync.SyncEvent"][1] > 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--older-than", "soon"), "--older-than"),
        (("--older-than", "0"), "--older-than"),
        (("--batch", "-5"), "--batch"),
        (("--batch", "1000000"), "--batch"),
        (("--batch", "1.5"), "--batch"),
    ],
)
def test_the_command_refuses_bad_input_naming_the_option(args, named):
    with pytest.raises(CommandError, match=named):
        command(*args)


# --- the effect on table sizes -------------------------------------------------------------------

MEASURE_RECORDS = int(os.environ.get("RETENTION_MEASURE_RECORDS", "300"))
MEASURE_CHANGES = int(os.environ.get("RETENTION_MEASURE_CHANGES", "5"))
MEASURED = ("sync.SyncEvent", "sync.SyncAttempt", "sync.SyncJob")


def table_bytes(label: str) -> int:
    """The table with its indexes (and TOAST, on PostgreSQL): the pages it takes on disk."""
    table = apps.get_model(label)._meta.db_table
    if db.vendor == "postgresql":
        sql = "SELECT pg_total_relation_size(%s)"
    else:  # SQLite's dbstat: every b-tree (table and indexes) of the table
        sql = "SELECT SUM(pgsize) FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = %s)"
    with db.cursor() as cursor:
        cursor.execute(sql, [table])
        return int(cursor.fetchone()[0])


def vacuum(full: bool) -> None:
    """PostgreSQL: VACUUM makes the space reusable, VACUUM FULL rewrites the table. SQLite reuses freed
    pages by itself; its VACUUM rewrites the whole database file."""
    with db.cursor() as cursor:
        if db.vendor != "postgresql":
            if full:
                cursor.execute("VACUUM")
            return
        for label in MEASURED:
            cursor.execute(f"VACUUM {'FULL ' if full else ''}ANALYZE {apps.get_model(label)._meta.db_table}")


@pytest.fixture
def no_nudge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "nudge", lambda ids: 0)  # committed for real: keep the broker (maybe shared) out


def changes_ingest(steps: range) -> None:
    """Each of RETENTION_MEASURE_RECORDS records changed once per step, through event_ingest in lists of 500,
    each change sent to both targets and synced at the first try (one attempt per job)."""
    for step in steps:
        items = [
            EventInput(
                operation="create" if step == 0 else "update",
                record_id=f"c-{n}",
                object_type="contact",
                source="system_a",
                targets=None,
                occurred_at=START + timedelta(minutes=step),
                data={"email": f"c-{n}-{step}@example.com", "first_name": "Ada" * 20},
                event_id=None,
                raw={"n": n, "step": step},
            )
            for n in range(MEASURE_RECORDS)
        ]
        for first in range(0, len(items), 500):
            event_ingest(items=items[first : first + 500], idempotency_key=None, is_batch=True, request_id="m")
        SyncAttempt.objects.bulk_create(
            SyncAttempt(
                job=job,
                version=job.version,
                started_at=timezone.now(),
                outcome=AttemptOutcome.SUCCESS,
                http_status=200,
                duration_ms=120,
            )
            for job in SyncJob.objects.all()
        )
        finish()


def database_bytes() -> int:
    """The whole database: what the disk holds, free pages included."""
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute("SELECT pg_database_size(current_database())")
            return int(cursor.fetchone()[0])
        cursor.execute("PRAGMA page_count")
        pages = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA page_size")
        return pages * int(cursor.fetchone()[0])


def all_bytes() -> dict[str, int]:
    return {**{label: table_bytes(label) for label in MEASURED}, "(database)": database_bytes()}


@pytest.mark.django_db(transaction=True)  # VACUUM cannot run inside the test's transaction
def test_a_prune_leaves_one_event_per_record_and_one_attempt_per_job(connections, no_nudge, capsys):
    """The figures in docs/retention.md: RETENTION_MEASURE_RECORDS=20000 pytest -k one_event_per_record."""
    changes_ingest(range(MEASURE_CHANGES))
    age(OLD)
    SyncAttempt.objects.update(started_at=F("started_at") - OLD)
    jobs = SyncJob.objects.count()
    rows_before = {label: apps.get_model(label).objects.count() for label in MEASURED}
    stages = {"before": all_bytes()}

    started = time.perf_counter()
    deleted = prune()
    seconds = time.perf_counter() - started
    rows = {label: apps.get_model(label).objects.count() for label in MEASURED}
    stages["after prune"] = all_bytes()
    vacuum(full=False)
    stages["after VACUUM"] = all_bytes()
    changes_ingest(range(MEASURE_CHANGES, MEASURE_CHANGES + 1))  # one more change each: into the freed space
    stages["+1 change each"] = all_bytes()
    vacuum(full=True)
    stages["after FULL"] = all_bytes()

    assert rows == {"sync.SyncEvent": MEASURE_RECORDS, "sync.SyncAttempt": jobs, "sync.SyncJob": jobs}
    assert deleted["sync.SyncEvent"] == MEASURE_RECORDS * (MEASURE_CHANGES - 1)
    for label in ("sync.SyncEvent", "sync.SyncAttempt", "(database)"):
        assert stages["after FULL"][label] < stages["before"][label]
    with capsys.disabled():
        print(
            f"\n{db.vendor}: {MEASURE_RECORDS} records x {MEASURE_CHANGES} changes; {sum(deleted.values())} rows "
            f"pruned in {seconds:.2f} s"
        )
        print(f"{'':<18} {'rows before':>12} {'rows after':>11}" + "".join(f" {stage:>14}" for stage in stages))
        for label in [*MEASURED, "(database)"]:
            counted = f"{rows_before[label]:>12} {rows[label]:>11}" if label in rows else " " * 24
            mib = [f" {bytes_[label] / 2**20:>10.2f} MiB" for bytes_ in stages.values()]
            print(f"{label:<18} {counted}" + "".join(mib))


def test_allowance_samples_go_after_two_days_and_the_last_hours_stay(connections):
    now = timezone.now()
    for hours in (49, 47, 1):
        QuotaSample.objects.create(
            key="org",
            connection=connections["salesforce"],
            at=now - timedelta(hours=hours),
            used=5,
            cap=10,
            period_seconds=86400,
        )

    deleted = prune()

    assert deleted["sync.QuotaSample"] == 1
    kept = sorted(round((now - at).total_seconds() / 3600) for at in QuotaSample.objects.values_list("at", flat=True))
    assert kept == [1, 47]
