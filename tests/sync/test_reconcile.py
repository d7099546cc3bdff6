"""Reconcile: a full scan of a CRM object against the record links finds what polling cannot see
(an Outreach deletion, a change never polled, a record never captured) and queues it through
capture, so it reaches System A like any captured change; a dry run writes nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from crms.base import ChangePage, Connector
from crms.mocks.models import MockCall, MockRecord
from crms.mocks.runtime import fault_add
from crms.models import Connection
from crms.outreach import connector as outreach_connector
from crms.outreach import mock_store as outreach_store
from crms.salesforce import mock_store as salesforce_store
from sync import tasks
from sync.delivery.engine import throttled_connector
from sync.inbound import reconcile as reconcile_module
from sync.inbound.changes import poll
from sync.inbound.reconcile import reconcile, reconcile_all
from sync.models import CircuitBreaker, ReconcileRun, RecordLink, SyncEvent, SyncJob
from tests.conftest import drain, mock_outreach, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def salesforce(live_server: Any) -> Connection:
    return mock_salesforce(live_server.url)


def outreach_connection(base_url: str, settings: Any, refresh_token: str | None = None) -> Connection:
    """No webhook is registered in the mock: like a lost delivery, a deletion reaches us by no other way."""
    return mock_outreach(base_url, refresh_token=refresh_token)


@pytest.fixture
def outreach(live_server: Any, settings: Any) -> Connection:
    return outreach_connection(live_server.url, settings)


def sf_edit(**fields: Any) -> str:
    """A person edits Salesforce; the service learns of it only by reading Salesforce."""
    (row,) = salesforce_store.staff_push("Contact", [fields], [])
    return str(row["Id"])


def sf_delete(sf_id: str) -> None:
    """Deleted a few seconds ago: Salesforce's deleted list (whole seconds, up to now) then has it too."""
    salesforce_store.staff_push("Contact", [], [sf_id])
    MockRecord.objects.filter(system="salesforce", record_id=sf_id).update(
        deleted_at=timezone.now() - timedelta(seconds=5)
    )


def prospect_add(**attributes: Any) -> str:
    (row,) = outreach_store.staff_push("prospect", [attributes], [])
    return str(row["id"])


def poll_all(connection: Connection, object_type: str) -> dict[str, int]:
    result = poll(
        connection=connection, object_type=object_type, connector=throttled_connector(connection), owner="test"
    )
    return result.counts


def rows() -> dict[str, int]:
    return {
        "events": SyncEvent.objects.count(),
        "jobs": SyncJob.objects.count(),
        "runs": ReconcileRun.objects.count(),
        "links": RecordLink.objects.count(),
    }


def queued(action_counts: dict[str, int]) -> dict[str, int]:
    return {k: action_counts[k] for k in ("creates", "updates", "deletes")}


def demo_rules() -> None:
    from rules.demo import DEMO_RULES
    from rules.selectors import rule_set_forget
    from rules.services import rule_set_replace

    rule_set_replace(specs=DEMO_RULES, actor="test")
    rule_set_forget()  # this process looks at the rule-set version at most once a second


def in_sync(*, salesforce: Connection, system_a: Connection, **first: Any) -> str:
    """A Salesforce contact captured by polling and delivered to System A: both sides agree."""
    sf_id = sf_edit(**first)
    poll_all(salesforce, "Contact")
    assert drain(system_a).get("synced") == 1
    return sf_id


# --- what polling cannot see -----------------------------------------------------------------------


def test_an_outreach_prospect_deleted_in_the_crm_is_found_and_the_delete_reaches_system_a(
    outreach: Connection, system_a: Connection, salesforce: Connection
) -> None:
    demo_rules()  # prospects-from-outreach routes every operation, deletes included, to System A
    keep = prospect_add(firstName="Ada", lastName="Lovelace", emails=["ada@example.com"])
    gone = prospect_add(firstName="Grace", lastName="Hopper", emails=["grace@example.com"])
    assert poll_all(outreach, "prospect") == {"captured": 2}
    assert drain(system_a).get("synced") == 2
    outreach_store.staff_push("prospect", [], [gone])

    polled = poll_all(outreach, "prospect")
    run = reconcile(connection=outreach, object_type="prospect", dry_run=False)
    drained = drain(system_a)

    assert polled.get("captured", 0) == 0  # polling by updatedAt never shows a deletion
    assert (run.state, queued(run.counts), run.counts["unchanged"]) == (
        "done",
        {"creates": 0, "updates": 0, "deletes": 1},
        1,
    )
    assert run.report["samples"]["deletes"] == [gone] and run.report["samples"]["unchanged"] == [keep]
    event = SyncEvent.objects.get(source="outreach", operation="delete")
    assert (event.record_id, event.object_type) == (f"outreach-{gone}", "prospect")
    assert event.idempotency_key.startswith(f"event:reconcile:{run.pk}:")
    assert drained.get("synced") == 1
    in_a = {r.fields["first_name"]: r.deleted_at for r in MockRecord.objects.filter(system="system_a")}
    assert in_a["Grace"] is not None and in_a["Ada"] is None  # deleted in System A; the other one kept


def test_a_salesforce_change_never_polled_is_queued_as_an_update_and_reaches_system_a(
    salesforce: Connection, system_a: Connection
) -> None:
    sf_id = in_sync(salesforce=salesforce, system_a=system_a, LastName="Hopper", Email="grace@example.com")
    sf_edit(Id=sf_id, Phone="+1 555 0100")  # committed while nobody polled

    run = reconcile(connection=salesforce, object_type="Contact", dry_run=False)
    drained = drain(system_a)

    assert queued(run.counts) == {"creates": 0, "updates": 1, "deletes": 0}
    assert run.report["samples"]["updates"] == [sf_id]
    update = SyncEvent.objects.get(source="salesforce", operation="update")
    assert update.record_id == f"salesforce-{sf_id}" and (update.payload or {}).get("Phone") == "+1 555 0100"
    assert drained.get("synced") == 1
    (in_a,) = MockRecord.objects.filter(system="system_a", deleted_at__isnull=True)
    assert in_a.fields.get("Phone") == "+1 555 0100"


def test_crm_records_never_captured_are_queued_as_creates_reading_page_by_page(
    salesforce: Connection, system_a: Connection, settings: Any
) -> None:
    settings.MOCK_SALESFORCE_QUERY_PAGE = 2
    sf_ids = [sf_edit(LastName=f"L{n}", Email=f"l{n}@example.com") for n in range(5)]
    pages: list[tuple[int, int]] = []

    run = reconcile(
        connection=salesforce,
        object_type="Contact",
        dry_run=False,
        on_page=lambda page, seen: pages.append((page, seen)),
    )

    assert pages == [(1, 2), (2, 4), (3, 5)]
    assert queued(run.counts) == {"creates": 5, "updates": 0, "deletes": 0}
    created = SyncEvent.objects.filter(source="salesforce", operation="create")
    assert sorted(created.values_list("record_id", flat=True)) == sorted(f"salesforce-{i}" for i in sf_ids)
    assert set(RecordLink.objects.filter(system=salesforce).values_list("external_id", flat=True)) == set(sf_ids)
    assert drain(system_a).get("synced") == 5


# --- dry run, twice, already captured ----------------------------------------------------------


def three_differences(salesforce: Connection, system_a: Connection) -> dict[str, str]:
    """One Salesforce contact of each kind the reconcile looks for, and one unchanged."""
    same = in_sync(salesforce=salesforce, system_a=system_a, LastName="Same")
    edited = in_sync(salesforce=salesforce, system_a=system_a, LastName="Edited")
    deleted = in_sync(salesforce=salesforce, system_a=system_a, LastName="Deleted")
    sf_edit(Id=edited, Phone="+1 555 0199")
    sf_delete(deleted)
    new = sf_edit(LastName="New")
    return {"unchanged": same, "updates": edited, "deletes": deleted, "creates": new}


def test_a_dry_run_writes_nothing_and_reports_what_the_real_run_then_queues(
    salesforce: Connection, system_a: Connection
) -> None:
    expected = three_differences(salesforce, system_a)
    before = rows()

    dry = reconcile(connection=salesforce, object_type="Contact", dry_run=True)
    after_dry = rows()
    real = reconcile(connection=salesforce, object_type="Contact", dry_run=False)

    assert after_dry == before
    assert dry.pk is None and dry.dry_run and dry.state == "done"
    assert {action: dry.report["samples"][action] for action in expected} == {k: [v] for k, v in expected.items()}
    assert dry.counts == real.counts
    assert queued(real.counts) == {"creates": 1, "updates": 1, "deletes": 1}
    made = SyncEvent.objects.filter(idempotency_key__startswith=f"event:reconcile:{real.pk}:")
    assert sorted(made.values_list("operation", flat=True)) == ["create", "delete", "update"]
    assert rows()["runs"] == before["runs"] + 1
    saved = ReconcileRun.objects.get(pk=real.pk)
    assert (saved.state, saved.counts, saved.finished_at is not None) == ("done", real.counts, True)


def test_a_second_run_right_after_queues_nothing(salesforce: Connection, system_a: Connection) -> None:
    expected = three_differences(salesforce, system_a)
    first = reconcile(connection=salesforce, object_type="Contact", dry_run=False)
    events = SyncEvent.objects.count()

    second = reconcile(connection=salesforce, object_type="Contact", dry_run=False)

    assert queued(first.counts) == {"creates": 1, "updates": 1, "deletes": 1}
    assert queued(second.counts) == {"creates": 0, "updates": 0, "deletes": 0}
    assert second.report["samples"]["already_deleted"] == [expected["deletes"]]  # its delete event is the latest
    assert SyncEvent.objects.count() == events


def test_a_change_captured_but_not_yet_agreed_is_reported_already_captured_not_queued_twice(
    salesforce: Connection, system_a: Connection
) -> None:
    sf_id = in_sync(salesforce=salesforce, system_a=system_a, LastName="Hopper")
    link = RecordLink.objects.get(system=salesforce)
    agreed = dict(link.last_values)
    sf_edit(Id=sf_id, Phone="+1 555 0106")
    assert poll_all(salesforce, "Contact") == {"captured": 1}
    # The link keeps what both sides last agreed on until the change is delivered.
    RecordLink.objects.filter(pk=link.pk).update(last_values=agreed)
    events = SyncEvent.objects.count()

    run = reconcile(connection=salesforce, object_type="Contact", dry_run=False)

    assert (run.counts["updates"], run.counts["already_captured"]) == (0, 1)
    assert SyncEvent.objects.count() == events


def test_a_link_whose_record_system_a_deleted_is_left_alone(
    api: Any, salesforce: Connection, system_a: Connection
) -> None:
    sf_id = in_sync(salesforce=salesforce, system_a=system_a, LastName="Hopper")
    record_id = f"salesforce-{sf_id}"
    body = {"operation": "delete", "record_id": record_id, "object_type": "Contact"}
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202
    assert drain(salesforce).get("synced") == 1  # gone from Salesforce by our own delete

    run = reconcile(connection=salesforce, object_type="Contact", dry_run=True)

    assert (run.counts["deletes"], run.report["samples"]["already_deleted"]) == (0, [sf_id])


def test_a_record_the_scan_skipped_because_another_moved_is_not_deleted(
    outreach: Connection, system_a: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRM that pages by offset (the mock's offset_paging fault): a record edited mid-scan moves to the end
    and the one after it is skipped."""
    monkeypatch.setattr(outreach_connector, "PAGE_SIZE", 2)
    ids = [prospect_add(firstName=f"P{n}", emails=[f"p{n}@example.com"]) for n in range(5)]
    # Made a minute ago: the edit mid-scan then stamps a later second (stamps have whole seconds).
    MockRecord.objects.filter(system="outreach").update(modified_at=F("modified_at") - timedelta(minutes=1))
    poll_all(outreach, "prospect")
    real = throttled_connector

    def editing_after_first_page(connection: Connection, **options: Any) -> Connector:
        connector = real(connection, **options)
        changes = connector.changes

        def changes_then_edit(object_type: str, cursor: str | None) -> ChangePage:
            page = changes(object_type, cursor)
            if cursor is None:
                outreach_store.staff_push("prospect", [{"id": ids[0], "title": "moved"}], [])
            return page

        monkeypatch.setattr(connector, "changes", changes_then_edit)
        return connector

    monkeypatch.setattr(reconcile_module, "throttled_connector", editing_after_first_page)
    fault_add(system="outreach", calls=None, seconds=300, code="offset_paging", latency_ms=1)

    run = reconcile(connection=outreach, object_type="prospect", dry_run=True)

    assert run.report["records"] == 4  # one was never on a page
    assert run.counts["deletes"] == 0
    assert run.report["samples"]["present_on_recheck"] == [ids[2]]


# --- the command ---------------------------------------------------------------------------------


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("sync_reconcile", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_command_dry_run_prints_a_table_and_the_real_run_queues_it_once(
    salesforce: Connection, system_a: Connection
) -> None:
    expected = three_differences(salesforce, system_a)
    before = rows()

    dry = run_command("--connection", "salesforce", "--object", "Contact", "--dry-run")
    assert rows() == before
    real = run_command("--connection", "salesforce", "--object", "Contact")
    again = run_command("--connection", "salesforce", "--object", "Contact", "--samples", "0")

    assert "salesforce Contact (dry run, nothing queued): 1 page(s), 3 record(s)" in dry
    for action, sf_id in expected.items():
        assert any(line.split()[:3] == [action, "1", sf_id] for line in dry.splitlines()), dry
    run = ReconcileRun.objects.order_by("started_at").first()
    assert run is not None and f"salesforce Contact (run {run.pk}, queued)" in real
    assert "capture: captured 3" in real
    assert [
        line.split()[:2] for line in again.splitlines() if line.split()[:1] in (["creates"], ["updates"], ["deletes"])
    ] == [["creates", "0"], ["updates", "0"], ["deletes", "0"]]


def test_the_command_covers_every_readable_object_by_default(salesforce: Connection, system_a: Connection) -> None:
    out = run_command("--dry-run")

    headers = [line.split(" (")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert sorted(headers) == ["salesforce Account", "salesforce Contact", "salesforce Lead"]  # System A is not read


def test_the_command_names_the_option_for_an_unknown_connection_or_object(
    salesforce: Connection, system_a: Connection
) -> None:
    with pytest.raises(CommandError, match="--connection: no enabled connection named 'nope'"):
        run_command("--connection", "nope")
    with pytest.raises(CommandError, match="--connection: 'system_a' is not read from"):
        run_command("--connection", "system_a")
    with pytest.raises(CommandError, match="--object: 'Widget' is not read from salesforce"):
        run_command("--connection", "salesforce", "--object", "Widget")
    assert not MockCall.objects.filter(system="salesforce", path__contains="query").exists()


# --- on a schedule -------------------------------------------------------------------------------


def test_one_failing_connection_does_not_stop_the_others(
    live_server: Any, settings: Any, salesforce: Connection, system_a: Connection
) -> None:
    broken = outreach_connection(live_server.url, settings, refresh_token="revoked")
    new = sf_edit(LastName="New")

    summary = reconcile_all()

    assert sorted(summary) == ["salesforce:Account", "salesforce:Contact", "salesforce:Lead"]
    assert summary["salesforce:Contact"]["creates"] == 1
    assert SyncEvent.objects.filter(source="salesforce", record_id=f"salesforce-{new}").exists()
    failed = ReconcileRun.objects.filter(connection=broken)
    assert sorted(failed.values_list("object_type", "state")) == [("account", "failed"), ("prospect", "failed")]
    assert all("ConnectorError" in run.last_error and run.finished_at for run in failed)


def test_a_connection_whose_breaker_is_open_is_skipped(salesforce: Connection, system_a: Connection) -> None:
    sf_edit(LastName="New")
    CircuitBreaker.objects.create(connection=salesforce, state="open", opened_at=timezone.now())

    summary = reconcile_all()

    assert summary == {}
    assert not ReconcileRun.objects.exists() and not SyncEvent.objects.exists()
    assert not MockCall.objects.filter(system="salesforce").exclude(path__contains="staff").exists()


@pytest.mark.django_db  # not transactional: the rows the migrations wrote are still there
def test_the_daily_schedule_is_installed_by_the_migrations() -> None:
    from django_q.models import Schedule

    row = Schedule.objects.get(name="sync-reconcile")

    assert (row.func, row.schedule_type, row.repeats) == ("sync.tasks.reconcile_all", Schedule.DAILY, -1)
    assert import_string(row.func) is tasks.reconcile_all
    assert import_string("sync.reconcile.reconcile_all") is tasks.reconcile_all  # the old path, for one release


def test_records_system_a_wrote_to_both_crms_reconcile_as_unchanged(
    api: Any, salesforce: Connection, outreach: Connection, system_a: Connection
) -> None:
    demo_rules()
    body = {
        "operation": "create",
        "record_id": "c-42",
        "object_type": "contact",
        "data": {"email": "Ada@Example.com", "first_name": "Ada", "last_name": "Lovelace"},
    }
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202
    assert drain(salesforce).get("synced") == 1 and drain(outreach).get("synced") == 1

    in_salesforce = reconcile(connection=salesforce, object_type="Contact", dry_run=True)
    in_outreach = reconcile(connection=outreach, object_type="prospect", dry_run=True)

    assert in_salesforce.counts["unchanged"] == 1 and not any(queued(in_salesforce.counts).values())
    assert in_outreach.counts["unchanged"] == 1 and not any(queued(in_outreach.counts).values())
