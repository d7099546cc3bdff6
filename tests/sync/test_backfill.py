"""`manage.py sync_backfill`: everything in range, from System A's stored events or a CRM's records, goes
to a target through the pipeline; a run resumes from its checkpoint and never stores or sends a record
twice; above a Salesforce target's bulk_threshold the records go by Bulk API 2.0; --dry-run writes nothing."""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count
from django.utils import timezone

from crms.mocks.models import MockBulkJob, MockCall, MockRecord
from crms.models import Connection
from crms.outreach import mock_store as outreach_store
from crms.salesforce import mock_store as salesforce_store
from crms.services import connection_save
from crms.systema import mock as system_a_mock
from sync.inbound import backfill as backfill_module
from sync.inbound import backfill_plan
from sync.inbound import changes as inbound
from sync.inbound.backfill_plan import since_cursor
from sync.ingest.services import event_ingest
from sync.models import AttemptOutcome, BackfillRun, JobState, RecordLink, SyncAttempt, SyncEvent, SyncJob
from tests.conftest import drain, mock_outreach, mock_salesforce, mock_system_a

pytestmark = pytest.mark.django_db(transaction=True)

FROM_SYSTEM_A = ("--from", "system_a", "--to", "salesforce", "--object", "Contact")
FROM_SALESFORCE = ("--from", "salesforce", "--to", "system_a", "--object", "Contact")


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk jobs are looked at again without waiting between looks."""
    monkeypatch.setattr(backfill_plan, "sleep", lambda seconds: None)


def backfill(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("sync_backfill", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def post(api: Any, items: list[dict[str, Any]]) -> None:
    """System A posts changes (before the target is connected, they go nowhere)."""
    response = api.post("/v1/sync/", data=json.dumps(items), content_type="application/json")
    assert response.status_code == 202, response.content


def contact(record_id: str, operation: str = "create", **data: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"operation": operation, "record_id": record_id, "object_type": "Contact"}
    if operation != "delete":
        item["data"] = {"LastName": f"Last {record_id}", **data}
    return item


def contacts(count: int) -> list[dict[str, Any]]:
    return [contact(f"c-{n}", Email=f"c{n}@example.com") for n in range(1, count + 1)]


def in_salesforce() -> dict[str, dict[str, Any]]:
    """The mock org's contacts by System A id; a record there twice would collide here and fail the count."""
    rows = list(MockRecord.objects.filter(system="salesforce", object="Contact", deleted_at__isnull=True))
    found = {str(r.fields.get("RecordSync_Id__c")): r.fields for r in rows}
    assert len(found) == len(rows), "a record was created twice"
    return found


def backfill_events(run: BackfillRun) -> Any:
    return SyncEvent.objects.filter(idempotency_key__startswith=f"event:backfill:{run.pk}:")


def successes_per_job() -> Counter[int]:
    rows = SyncAttempt.objects.filter(outcome=AttemptOutcome.SUCCESS).values("job").annotate(n=Count("id"))
    return Counter({row["job"]: row["n"] for row in rows})


def crm_contacts(count: int) -> list[str]:
    """Contacts a person made in Salesforce: the service knows nothing of them yet."""
    rows = salesforce_store.staff_push("Contact", [{"LastName": f"L{n}"} for n in range(count)], [])
    return [str(row["Id"]) for row in rows]


def ingest_failing_on(call: int, error: BaseException) -> Any:
    real = event_ingest
    calls: list[int] = []

    def ingest(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == call:
            raise error
        return real(**kwargs)

    return ingest


# --- from System A ---------------------------------------------------------------------------------


def test_a_backfill_from_system_a_replays_the_latest_state_of_each_record(api, live_server):
    def at(hours_ago: int) -> str:
        return (timezone.now() - timedelta(hours=hours_ago)).isoformat()

    post(
        api,
        [
            {**contact("c-1", Email="old@example.com"), "occurred_at": at(3)},
            {**contact("c-1", "update", Email="new@example.com"), "occurred_at": at(2)},
            contact("c-2"),
            {**contact("c-3"), "occurred_at": at(3)},
            {**contact("c-3", "delete"), "occurred_at": at(2)},
        ],
    )
    salesforce = mock_salesforce(live_server.url)  # connected after the fact: nothing was sent to it

    out, err = backfill(*FROM_SYSTEM_A)

    run = BackfillRun.objects.get()
    assert run.state == "done" and run.total == 3 and run.processed == 3
    assert f"run {run.pk} done: 3 record(s)" in out and "3/3" in err  # the progress bar knew the total
    replays = {e.record_id: e for e in backfill_events(run)}
    originals = SyncEvent.objects.filter(source="system_a").exclude(idempotency_key__startswith="event:backfill:")
    latest = {r: originals.filter(record_id=r).latest("occurred_at", "received_at") for r in ("c-1", "c-2", "c-3")}
    for record_id, original in latest.items():
        replay = replays[record_id]
        assert replay.idempotency_key == f"event:backfill:{run.pk}:{original.pk}"
        assert (replay.operation, replay.payload, replay.occurred_at) == (
            original.operation,
            original.payload,
            original.occurred_at,
        )
    assert replays["c-1"].payload == {"LastName": "Last c-1", "Email": "new@example.com"}
    # Below the threshold the jobs wait for the engine, like any change.
    assert set(SyncJob.objects.filter(target=salesforce).values_list("state", flat=True)) == {JobState.PENDING}
    assert not MockCall.objects.filter(system="salesforce").exists() and not MockBulkJob.objects.exists()

    drain(salesforce)

    sent = in_salesforce()
    assert set(sent) == {"c-1", "c-2"}  # c-3 was deleted before it ever reached Salesforce
    assert sent["c-1"]["Email"] == "new@example.com"


def test_an_interrupted_backfill_resumes_where_it_stopped_and_sends_every_record_once(api, live_server, monkeypatch):
    post(api, contacts(7))
    salesforce = mock_salesforce(live_server.url)
    monkeypatch.setattr(backfill_module, "event_ingest", ingest_failing_on(3, KeyboardInterrupt()))

    with pytest.raises(CommandError, match=r"interrupted: run \d+ stopped after 4 record") as interrupted:
        backfill(*FROM_SYSTEM_A, "--batch", "2")
    assert interrupted.value.returncode == 130  # as a shell reports Ctrl-C

    run = BackfillRun.objects.get()
    assert (run.state, run.processed, run.cursor) == ("failed", 4, "c-4")
    assert "KeyboardInterrupt" in run.last_error
    assert backfill_events(run).count() == 4
    drain(salesforce)  # the engine sends what was committed meanwhile
    monkeypatch.undo()
    monkeypatch.setattr(backfill_plan, "sleep", lambda seconds: None)

    out, _ = backfill(*FROM_SYSTEM_A, "--batch", "2")
    drain(salesforce)

    assert f"resuming run {run.pk} after record c-4: 4 record(s) done" in out
    run.refresh_from_db()
    assert (run.state, run.processed, BackfillRun.objects.count()) == ("done", 7, 1)
    events = backfill_events(run)
    assert events.count() == 7 and len(set(events.values_list("record_id", flat=True))) == 7
    assert sorted(in_salesforce()) == [f"c-{n}" for n in range(1, 8)]
    assert list(successes_per_job().values()) == [1] * 7  # each record written once


def test_an_interruption_between_a_pages_events_and_its_checkpoint_keeps_neither(api, live_server, monkeypatch):
    post(api, contacts(5))
    salesforce = mock_salesforce(live_server.url)
    real = backfill_module._checkpoint
    calls: list[int] = []

    def checkpoint(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(backfill_module, "_checkpoint", checkpoint)
    with pytest.raises(CommandError, match="interrupted"):
        backfill(*FROM_SYSTEM_A, "--batch", "2")
    run = BackfillRun.objects.get()
    assert (run.cursor, run.processed, backfill_events(run).count()) == ("c-2", 2, 2)  # page two rolled back whole

    monkeypatch.setattr(backfill_module, "_checkpoint", real)
    backfill(*FROM_SYSTEM_A, "--batch", "2")
    drain(salesforce)

    assert backfill_events(run).count() == 5
    assert sorted(in_salesforce()) == [f"c-{n}" for n in range(1, 6)]


def test_a_finished_backfill_asked_again_is_a_new_run_that_sends_nothing_new(api, live_server):
    post(api, contacts(3))
    salesforce = mock_salesforce(live_server.url)
    backfill(*FROM_SYSTEM_A)
    drain(salesforce)
    writes = MockCall.objects.filter(system="salesforce", method="PATCH").count()

    out, _ = backfill(*FROM_SYSTEM_A)
    drained = drain(salesforce)

    assert BackfillRun.objects.filter(state="done").count() == 2 and "done: 3 record(s)" in out
    assert drained.get("skipped") == 3  # the target already holds each record
    assert MockCall.objects.filter(system="salesforce", method="PATCH").count() == writes
    assert len(in_salesforce()) == 3


def test_restart_starts_over_and_abandons_the_unfinished_run(api, live_server, monkeypatch):
    post(api, contacts(4))
    mock_salesforce(live_server.url)
    monkeypatch.setattr(backfill_module, "event_ingest", ingest_failing_on(2, KeyboardInterrupt()))
    with pytest.raises(CommandError):
        backfill(*FROM_SYSTEM_A, "--batch", "2")
    monkeypatch.setattr(backfill_module, "event_ingest", ingest_failing_on(0, KeyboardInterrupt()))

    out, _ = backfill(*FROM_SYSTEM_A, "--batch", "2", "--restart")

    first, second = BackfillRun.objects.order_by("pk")
    assert (first.state, first.processed, first.last_error) == ("failed", 2, "abandoned: started over with --restart")
    assert (second.state, second.processed) == ("done", 4) and "resuming" not in out
    assert backfill_events(second).count() == 4


def test_a_run_held_by_a_live_process_is_refused_and_one_left_by_a_dead_process_is_resumed(api, live_server):
    post(api, contacts(2))
    mock_salesforce(live_server.url)
    held = BackfillRun.objects.create(
        source="system_a",
        target="salesforce",
        object_type="Contact",
        owner="sync_backfill-999-elsewhere",
        updated_at=timezone.now(),
    )

    with pytest.raises(CommandError, match="running in sync_backfill-999-elsewhere"):
        backfill(*FROM_SYSTEM_A)
    BackfillRun.objects.filter(pk=held.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    out, _ = backfill(*FROM_SYSTEM_A)

    held.refresh_from_db()
    assert f"resuming run {held.pk}" in out and (held.state, held.processed) == ("done", 2)


def test_since_limits_a_system_a_backfill_to_records_changed_since(api, live_server):
    old = (timezone.now() - timedelta(days=30)).isoformat()
    post(api, [{**contact("c-old"), "occurred_at": old}, contact("c-new")])
    salesforce = mock_salesforce(live_server.url)
    since = (timezone.now() - timedelta(days=2)).date().isoformat()

    backfill(*FROM_SYSTEM_A, "--since", since)
    drain(salesforce)

    run = BackfillRun.objects.get()
    assert run.total == 1 and run.since is not None and run.since.date().isoformat() == since
    assert list(in_salesforce()) == ["c-new"]


# --- Bulk API 2.0 above the threshold ---------------------------------------------------------------


def test_above_the_bulk_threshold_the_records_go_by_bulk_api_and_never_through_the_dispatcher(api, live_server):
    post(api, contacts(210))
    salesforce = mock_salesforce(live_server.url)
    salesforce.config = {**salesforce.config, "bulk_threshold": 201}
    salesforce.save(update_fields=["config"])

    out, _ = backfill(*FROM_SYSTEM_A, "--batch", "150")

    jobs = MockBulkJob.objects.order_by("created_at")
    assert [(job.state, job.uploaded.count("\n") - 1) for job in jobs] == [("JobComplete", 150), ("JobComplete", 60)]
    assert set(SyncJob.objects.filter(target=salesforce).values_list("state", flat=True)) == {JobState.SYNCED}
    assert drain(salesforce) == {}  # nothing was left for the dispatcher to send again
    assert not MockCall.objects.filter(system="salesforce", path__contains="/composite/").exists()  # no REST writes
    sent = in_salesforce()
    assert len(sent) == 210
    links = dict(RecordLink.objects.filter(system=salesforce).values_list("record_id", "external_id"))
    stored = {str(r.fields["RecordSync_Id__c"]): r.record_id for r in MockRecord.objects.filter(system="salesforce")}
    assert links == stored  # each job's link holds the id Salesforce gave the record
    assert list(successes_per_job().values()) == [1] * 210
    run = BackfillRun.objects.get()
    assert run.counts["bulk_claimed"] == run.counts["bulk_synced"] == 210 and "synced 210" in out


def test_records_a_bulk_upsert_cannot_carry_go_through_the_engine(api, live_server):
    post(api, [*contacts(205), contact("c-odd", Phone="+1 555 0100")])  # c-odd: a field set of its own
    salesforce = mock_salesforce(live_server.url)
    salesforce.config = {**salesforce.config, "bulk_threshold": 201}
    salesforce.save(update_fields=["config"])
    post(api, [contact("c-linked")])
    drain(salesforce)  # linked now: updated by its Salesforce id, which a Bulk upsert cannot do
    post(api, [contact("c-linked", "update", Email="moved@example.com")])

    backfill(*FROM_SYSTEM_A)

    assert [job.uploaded.count("\n") - 1 for job in MockBulkJob.objects.all()] == [205]
    pending = SyncJob.objects.filter(target=salesforce, state=JobState.PENDING)
    assert sorted(pending.values_list("record_id", flat=True)) == ["c-linked", "c-odd"]
    assert drain(salesforce).get("synced") == 2
    sent = in_salesforce()
    assert len(sent) == 207 and sent["c-linked"]["Email"] == "moved@example.com"


def test_a_bulk_job_that_cannot_be_started_leaves_its_records_to_the_engine(api, live_server):
    from crms.mocks.models import MockFault

    post(api, contacts(205))
    salesforce = mock_salesforce(live_server.url)
    salesforce.config = {**salesforce.config, "bulk_threshold": 201}
    salesforce.save(update_fields=["config"])
    MockFault.objects.create(system="salesforce", status=503, calls_left=backfill_plan.READ_TRIES)

    backfill(*FROM_SYSTEM_A)

    jobs = SyncJob.objects.filter(target=salesforce)
    assert set(jobs.values_list("state", "last_error_code")) == {(JobState.RETRYING, "SERVER_UNAVAILABLE")}
    assert not MockBulkJob.objects.exists()
    drain(salesforce, now=timezone.now() + timedelta(hours=1))  # the backoff has passed: REST this time
    assert len(in_salesforce()) == 205


# --- from a CRM ------------------------------------------------------------------------------------


def test_a_backfill_from_salesforce_resumes_after_a_crash_and_captures_each_record_once(
    live_server, settings, monkeypatch
):
    settings.MOCK_SALESFORCE_QUERY_PAGE = 2
    salesforce = mock_salesforce(live_server.url)
    system_a = mock_system_a(live_server.url)
    crm_ids = crm_contacts(5)
    real = inbound.capture
    calls: list[int] = []

    def crash_on_second_page(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker lost")
        return real(**kwargs)

    monkeypatch.setattr(backfill_module, "capture", crash_on_second_page)
    with pytest.raises(RuntimeError, match="worker lost"):
        backfill(*FROM_SALESFORCE)
    run = BackfillRun.objects.get()
    assert (run.state, run.processed) == ("failed", 2) and "worker lost" in run.last_error

    monkeypatch.setattr(backfill_module, "capture", real)
    out, _ = backfill(*FROM_SALESFORCE)
    drain(system_a)

    run.refresh_from_db()
    assert "resuming run" in out and (run.state, run.processed) == ("done", 5)
    events = backfill_events(run)
    assert sorted(events.values_list("record_id", flat=True)) == sorted(f"salesforce-{i}" for i in crm_ids)
    in_a = MockRecord.objects.filter(system="system_a", object="Contact")
    assert sorted(r.fields["LastName"] for r in in_a) == [f"L{n}" for n in range(5)]  # each once
    assert list(successes_per_job().values()) == [1] * 5
    assert run.api_calls == MockCall.objects.filter(system="salesforce").count()
    assert RecordLink.objects.filter(system=salesforce).count() == 5


def test_a_salesforce_pass_cut_short_by_its_limit_is_read_on_to_the_end(live_server, settings, monkeypatch):
    from crms.salesforce import soql

    monkeypatch.setattr(soql, "PAGE_LIMIT", 2)  # one pass reads at most two records
    mock_salesforce(live_server.url)
    mock_system_a(live_server.url)
    ids = crm_contacts(5)
    start = timezone.now() - timedelta(minutes=10)
    for n, crm_id in enumerate(ids):  # a minute apart: each pass starts a little before the newest it read
        MockRecord.objects.filter(record_id=crm_id).update(modified_at=start + timedelta(minutes=n))

    backfill(*FROM_SALESFORCE)

    assert backfill_events(BackfillRun.objects.get()).count() == 5


def test_since_limits_a_salesforce_backfill_to_the_instant(live_server, settings):
    mock_salesforce(live_server.url)
    mock_system_a(live_server.url)
    long_ago, just_before, recent = crm_contacts(3)
    since = (timezone.now() - timedelta(days=2)).replace(microsecond=0)
    MockRecord.objects.filter(record_id=long_ago).update(modified_at=since - timedelta(days=30))
    # SOQL compares whole seconds, so this one is read; the page filter drops it.
    MockRecord.objects.filter(record_id=just_before).update(modified_at=since - timedelta(milliseconds=500))

    backfill(*FROM_SALESFORCE, "--since", since.isoformat())

    assert list(backfill_events(BackfillRun.objects.get()).values_list("record_id", flat=True)) == [
        f"salesforce-{recent}"
    ]


def test_since_limits_an_outreach_backfill(live_server, settings):
    mock_outreach(live_server.url)
    mock_system_a(live_server.url)
    old, recent = (
        outreach_store.staff_push("prospect", [{"emails": [f"p{n}@example.com"]}], [])[0]["id"] for n in range(2)
    )
    MockRecord.objects.filter(system="outreach", record_id=str(old)).update(
        modified_at=timezone.now() - timedelta(days=30)
    )
    since = (timezone.now() - timedelta(days=2)).date().isoformat()

    backfill("--from", "outreach", "--to", "system_a", "--object", "prospect", "--since", since)

    assert list(backfill_events(BackfillRun.objects.get()).values_list("record_id", flat=True)) == [
        f"outreach-{recent}"
    ]


def test_since_cursors_start_each_connector_at_the_right_moment():
    moment = datetime(2026, 11, 1, 9, 30, 15, 250_000, tzinfo=UTC)

    assert json.loads(since_cursor("salesforce", moment)) == {"since": "2026-11-01T09:30:14Z"}  # > is strict
    assert json.loads(since_cursor("outreach", moment)) == {"since": "2026-11-01T09:30:15.250Z"}  # inclusive
    assert since_cursor("database", moment) == "" and since_cursor("salesforce", None) == ""


# --- dry run ---------------------------------------------------------------------------------------


def test_a_dry_run_counts_each_action_and_writes_nothing(api, live_server):
    post(api, contacts(3))
    salesforce = mock_salesforce(live_server.url)
    backfill(*FROM_SYSTEM_A)
    drain(salesforce)
    post(api, [contact("c-2", "update", Email="changed@example.com"), contact("c-3", "delete"), contact("c-4")])

    def snapshot() -> tuple[Any, ...]:
        return (
            SyncEvent.objects.count(),
            list(SyncJob.objects.order_by("pk").values_list("state", "version")),
            BackfillRun.objects.count(),
            RecordLink.objects.count(),
            MockCall.objects.count(),
        )

    before = snapshot()
    out, _ = backfill(*FROM_SYSTEM_A, "--dry-run")

    assert snapshot() == before
    assert "dry run, nothing written: 4 Contact record(s) from system_a to salesforce" in out
    for line in ("create        1", "update        1", "delete        1", "unchanged     1"):
        assert f"  {line}" in out
    # Salesforce sends creates, updates and deletes in separate calls of up to 200 records.
    assert "0 to read (System A's events are stored here); about 3 to push by REST" in out


def test_a_dry_run_above_the_bulk_threshold_counts_bulk_jobs(api, live_server):
    post(api, contacts(205))
    salesforce = mock_salesforce(live_server.url)
    salesforce.config = {**salesforce.config, "bulk_threshold": 201}
    salesforce.save(update_fields=["config"])

    out, _ = backfill(*FROM_SYSTEM_A, "--dry-run", "--batch", "100")

    assert "  create        205" in out
    assert "3 Bulk API 2.0 job(s) of up to 100 records for the creates" in out
    assert not SyncEvent.objects.filter(idempotency_key__startswith="event:backfill:").exists()


def test_a_dry_run_from_a_crm_only_reads_and_reports_the_calls_it_made(live_server, settings):
    mock_salesforce(live_server.url)
    mock_system_a(live_server.url)
    crm_contacts(3)

    out, _ = backfill(*FROM_SALESFORCE, "--dry-run")

    calls = MockCall.objects.filter(system="salesforce")
    assert f"API calls: {calls.count()} made to read salesforce; about 3 to push by REST" in out
    assert set(calls.values_list("method", flat=True)) <= {"GET", "POST"}  # the POST is the login
    assert not calls.filter(method="POST").exclude(path__contains="oauth2/token").exists()
    assert "  create        3" in out
    assert not (SyncEvent.objects.exists() or RecordLink.objects.exists() or BackfillRun.objects.exists())


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "system_a", "--to", "hubspot", "--object", "Contact"), "--to 'hubspot': no connection"),
        (("--from", "pipedrive", "--to", "salesforce", "--object", "Contact"), "--from 'pipedrive': no connection"),
        (
            ("--from", "salesforce", "--to", "system_a", "--object", "Opportunity"),
            "--object 'Opportunity': salesforce (salesforce) has no such object; use one of: Account, Contact, Lead",
        ),
        (
            ("--from", "system_a", "--to", "salesforce", "--object", "contacts"),
            "--object 'contacts': System A has sent no such records; it has sent: Contact",
        ),
        (("--from", "salesforce", "--to", "salesforce", "--object", "Contact"), "is also the source"),
        (("--from", "system_a", "--to", "salesforce", "--object", "Contact", "--since", "yesterday"), "--since"),
        (
            ("--from", "system_a", "--to", "salesforce", "--object", "Contact", "--since", "2026-01-01T09:00"),
            "no UTC offset",
        ),
        (("--from", "system_a", "--to", "salesforce", "--object", "Contact", "--since", "2999-01-01"), "future"),
        (("--from", "system_a", "--to", "salesforce", "--object", "Contact", "--batch", "0"), "--batch 0"),
    ],
)
def test_bad_options_are_refused_naming_the_option(api, live_server, settings, args, message):
    post(api, contacts(1))
    mock_salesforce(live_server.url)
    mock_system_a(live_server.url)

    with pytest.raises(CommandError) as refused:
        backfill(*args)

    assert message in str(refused.value)
    assert not BackfillRun.objects.exists()


def test_a_connection_that_cannot_be_read_is_refused_as_a_source(settings, tmp_path):
    connection_save(
        name="legacy_a",
        kind="system_a",
        config={"url": "http://127.0.0.1:9/"},
        secrets={"signing_secret": system_a_mock.signing_secret()},
    )
    contacts = {"Contact": {"file": "contacts.csv", "key": "id", "columns": ["email"]}}
    connection_save(
        name="warehouse", kind="flatfile", config={"folder": str(tmp_path), "format": "csv", "objects": contacts}
    )

    with pytest.raises(CommandError, match="--from 'legacy_a': a system_a connection cannot be read from"):
        backfill("--from", "legacy_a", "--to", "warehouse", "--object", "Contact")
    # Objects a flat file (or a database) holds are the ones its config names.
    assert backfill_plan.known_objects(Connection.objects.get(name="warehouse")) == ["Contact"]


@pytest.fixture(autouse=True, scope="module")
def _no_stray_connections() -> Iterator[None]:
    """Cyclic garbage can keep an HTTP connection to the live server alive (an exception's traceback holding
    a connector), and with it a server thread and its connection to the test database, which PostgreSQL then
    refuses to drop. Collected here, once, after the module."""
    yield
    gc.collect()


def test_a_backfill_call_held_back_by_a_cap_looks_again_within_fifteen_minutes_not_hours(monkeypatch):
    from crms.base import ConnectorError
    from sync.delivery.throttle import Throttled

    slept: list[float] = []
    monkeypatch.setattr(backfill_plan, "sleep", slept.append)
    answers: list[Any] = [
        Throttled(8640.0),
        ConnectorError("down", code="HTTP_503", retry_after=10800, http_status=503),
    ]

    def call() -> str:
        if answers:
            raise answers.pop(0)
        return "done"

    assert backfill_plan.patiently(call) == "done"
    assert slept[0] == 900 and slept[1] <= 600
