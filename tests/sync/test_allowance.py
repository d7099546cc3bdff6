"""The target's own allowance (issue 18): sampled from its headers (every integration's use counts), forecast
at the last hour's rate, alerted on before it runs out, and a floor where backfill and reconcile stop."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command
from django.utils import timezone

from crms.base import QuotaSignal
from crms.mocks.models import MockCall
from crms.models import Connection
from crms.salesforce import connector as salesforce_connector
from crms.salesforce import mock_store as salesforce_store
from crms.salesforce import soql as salesforce_soql
from sync.contracts import EventInput
from sync.delivery import allowance, engine
from sync.delivery.throttle import (
    ALLOWANCE_FLOOR,
    AllowanceFloor,
    DatabaseThrottle,
    gate_for,
    observer_for,
)
from sync.ingest.services import event_ingest
from sync.models import Alert, AlertKind, BackfillRun, JobState, Lane, QuotaSample, RunState, SyncAttempt, SyncJob
from sync.ops import alerts
from sync.ops.config_services import config_override_set
from tests.conftest import mock_salesforce, mock_system_a

FROM_SALESFORCE = ("--from", "salesforce", "--to", "system_a", "--object", "Contact")


def said(connection: Connection, minutes_ago: float, used: int, cap: int = 15000, period: float = 86400) -> None:
    QuotaSample.objects.create(
        key="org",
        connection=connection,
        at=timezone.now() - timedelta(minutes=minutes_ago),
        used=used,
        cap=cap,
        period_seconds=period,
    )


@pytest.fixture
def org(db: None) -> Connection:
    return Connection.objects.create(name="sf-org", kind="salesforce", quota_owner="org")


def answer(header: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.headers["Sforce-Limit-Info"] = header
    response._content = b"{}"
    return response


def test_every_answer_is_heard_but_at_most_one_row_is_kept_each_half_minute(org):
    observe = observer_for(org, window=60, share_percent=90, backend=DatabaseThrottle())
    assert observe is not None

    for used in (100, 101, 102):
        observe(answer(f"api-usage={used}/15000"))

    rows = list(QuotaSample.objects.values_list("key", "used", "cap", "period_seconds"))
    assert rows == [("org", 100, 15000, 86400.0)]
    assert allowance._heard["org"].used == 102  # the newest answer still counts for the floor


def test_the_forecast_reads_the_rate_of_the_last_hour_and_says_when_it_runs_out(org):
    said(org, 90, used=1000)  # older than the hour: not read
    said(org, 30, used=4500)
    said(org, 0, used=6000)  # 3,000 an hour, every integration's calls

    found = allowance.forecast("org")

    assert found is not None
    assert (found.used, found.cap, found.remaining, found.percent_left) == (6000, 15000, 9000, 60.0)
    assert found.rate_per_hour == pytest.approx(3000, rel=0.01)
    assert found.runs_out_in == pytest.approx(3 * 3600, rel=0.01)
    assert found.runs_out_at is not None and found.runs_out_at > timezone.now() + timedelta(hours=2.9)


def test_an_allowance_that_refills_before_it_runs_out_has_no_end_and_too_few_samples_say_nothing(org):
    said(org, 30, used=100, cap=1000, period=1800)  # an hourly allowance refilling in half an hour
    said(org, 0, used=500, cap=1000, period=1800)
    assert allowance.forecast("org").runs_out_in is None  # type: ignore[union-attr]

    QuotaSample.objects.all().delete()
    said(org, 0, used=500)
    lone = allowance.forecast("org")
    assert lone is not None and lone.rate_per_hour is None and lone.runs_out_in is None


def test_the_allowance_alert_opens_before_it_runs_out_and_resolves_once_the_rate_falls(org):
    config_override_set(values={"alert_allowance_hours": 6}, connection=None, actor="t")
    said(org, 30, used=4500)
    said(org, 0, used=6000)

    alerts.alerts_check()

    alert = Alert.objects.get(kind=AlertKind.ALLOWANCE)
    assert alert.value == pytest.approx(3.0, abs=0.05) and alert.threshold == 6
    assert "runs out in 3h" in alert.message and "6000 of 15000 calls used (60% left)" in alert.message

    QuotaSample.objects.filter(used=4500).delete()
    said(org, 30, used=5990)  # 20 an hour: it refills long before it would run out
    alerts.alerts_check()
    alert.refresh_from_db()
    assert alert.state == "resolved"


def test_backfill_and_reconcile_calls_stop_at_the_floor_and_live_calls_do_not(org):
    config_override_set(values={"backfill_floor_percent": 25}, connection=None, actor="t")
    said(org, 0, used=12000)  # 20% left
    kept = {"limit": 0, "window": 60, "backend": DatabaseThrottle()}
    bulk = gate_for(org, **kept, lane=Lane.BULK, share=0.7, floor_percent=25)  # type: ignore[arg-type]
    live = gate_for(org, **kept, lane=Lane.LIVE, floor_percent=25)  # type: ignore[arg-type]

    with pytest.raises(AllowanceFloor) as raised:
        bulk()
    live()()

    assert raised.value.code == ALLOWANCE_FLOOR and raised.value.retry_after and raised.value.retry_after >= 1
    assert "less than 25%" in raised.value.message
    allowance.forget()
    allowance.sample(connection=org, key="org", signal=QuotaSignal(used=1000, cap=15000, resets_in=86400))
    bulk()()  # it refilled: this process heard so, before any row says it


# --- end to end, on the mock Salesforce, whose Sforce-Limit-Info counts every call of the day ----------


def post(api: Any, count: int, prefix: str) -> None:
    body = [
        {
            "operation": "create",
            "record_id": f"{prefix}{n}",
            "object_type": "Contact",
            "data": {"LastName": f"L{n}", "Email": f"{prefix}{n}@example.com"},
        }
        for n in range(count)
    ]
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202


@pytest.mark.django_db(transaction=True)
def test_backfill_jobs_wait_at_the_floor_while_live_changes_go_through(api, live_server, settings):
    settings.MOCK_SALESFORCE_DAILY_LIMIT = 10
    settings.SYNC_BATCH_SIZE = 1
    salesforce = mock_salesforce(live_server.url)
    values = {"backfill_floor_percent": 60, "quota_slow_down_percent": 100}
    config_override_set(values=values, connection=None, actor="t")
    post(api, 3, "live-")
    drain_all(salesforce)  # three writes: 3 of 10 used, as the mock's Sforce-Limit-Info says
    backfilled = [
        EventInput(
            operation="create",
            object_type="Contact",
            record_id=f"old-{n}",
            source="system_a",
            data={"LastName": f"O{n}"},
            targets=["salesforce"],
            occurred_at=None,
            event_id=None,
            raw={"n": n},
        )
        for n in range(4)
    ]
    event_ingest(items=backfilled, idempotency_key=None, is_batch=True, request_id="backfill:1", lane=Lane.BULK)
    calls = MockCall.objects.filter(system="salesforce").count()

    drain_all(salesforce)

    # 4 then 5 of 10 used: half is left, under the floor of 60%; the other two wait, no call made.
    assert MockCall.objects.filter(system="salesforce").count() - calls == 2
    waiting = SyncJob.objects.filter(state=JobState.RETRYING)
    assert waiting.count() == 2 and set(waiting.values_list("last_error_code", flat=True)) == {ALLOWANCE_FLOOR}
    assert set(SyncAttempt.objects.filter(job__in=waiting).values_list("outcome", flat=True)) == {"held"}
    post(api, 1, "later-")
    drain_all(salesforce)
    assert SyncJob.objects.get(record_id="later-0").state == JobState.SYNCED  # live changes still go


def drain_all(connection: Connection) -> None:
    for ids in engine.batches_claim(connection=connection, now=timezone.now(), force=True):
        engine.batch_run(job_ids=ids)


@pytest.mark.django_db(transaction=True)
def test_a_backfill_from_the_crm_stops_at_the_floor_and_says_why(live_server, settings, monkeypatch):
    settings.MOCK_SALESFORCE_DAILY_LIMIT = 8
    monkeypatch.setattr(salesforce_connector, "PAGE_LIMIT", 5)  # six pages of five: a call each
    monkeypatch.setattr(salesforce_soql, "PAGE_LIMIT", 5)
    mock_salesforce(live_server.url)
    mock_system_a(live_server.url)
    salesforce_store.staff_push("Contact", [{"LastName": f"C{n}"} for n in range(30)], [])
    config_override_set(
        values={"backfill_floor_percent": 60, "quota_slow_down_percent": 100}, connection=None, actor="t"
    )

    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as stopped:
        call_command("sync_backfill", *FROM_SALESFORCE, stdout=out, stderr=err)

    run = BackfillRun.objects.get()
    assert run.state == RunState.FAILED
    assert "less than 60% of the target's allowance is left" in run.last_error
    assert "less than 60%" in str(stopped.value)
    assert 0 < run.processed < 30  # it stopped part-way, resumable from its checkpoint
    # The allowance refills; what was heard is older than the recheck, so one call looks again.
    settings.MOCK_SALESFORCE_DAILY_LIMIT = 1000
    QuotaSample.objects.update(at=timezone.now() - timedelta(hours=1))
    allowance.forget()
    call_command("sync_backfill", *FROM_SALESFORCE, stdout=out, stderr=err)
    run.refresh_from_db()
    assert (run.state, run.processed) == (RunState.DONE, 30)


def test_the_dashboard_and_the_stats_show_each_owners_allowance_and_when_it_runs_out(org, admin_client, staff_api):
    said(org, 30, used=4500)
    said(org, 0, used=6000)

    page = admin_client.get("/dashboard/").content.decode()
    figures = staff_api.get("/v1/sync/stats").json()["allowance"]

    assert "API allowance per quota owner" in page and "6000 / 15000" in page and "3000 calls/h" in page
    assert [(row["key"], row["used"], row["cap"], row["percent_left"]) for row in figures] == [
        ("org", 6000, 15000, 60.0)
    ]
    assert figures[0]["runs_out_at"] is not None and figures[0]["rate_per_hour"] == pytest.approx(3000, rel=0.01)
