"""Alerts: thresholds per connection crossed by real job, attempt and breaker rows; one webhook message per
incident and one when it clears, the webhook faked at the HTTP seam with `responses`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
import responses
from django.utils import timezone
from django.utils.module_loading import import_string

from crms.models import Connection
from sync import tasks
from sync.delivery import config
from sync.delivery.breaker import Gate, breaker_allow, breaker_failure, breaker_success
from sync.models import Alert, AlertKind, AlertState, AttemptOutcome, SyncAttempt, SyncJob
from sync.ops.alerts import (
    Reading,
    alert_open,
    alerts_check,
    alerts_deliver,
    alerts_open,
    alerts_recent,
)
from sync.ops.config_services import config_override_set

HOOK = "https://hooks.example.test/services/T0000/B0000/alerts"
# Every kind on, at known values, whatever the environment says; each test changes what it needs.
THRESHOLDS = {
    "alert_lag_seconds": 600,
    "alert_failure_percent": 50,
    "alert_failure_window": 900,
    "alert_breaker_open_seconds": 300,
}


@pytest.fixture
def thresholds(connections: dict[str, Connection], settings: Any) -> dict[str, Connection]:
    settings.ALERT_FAILURE_MIN_ATTEMPTS = 10
    config_override_set(values=THRESHOLDS, connection=None, actor="test")
    config.forget()
    return connections


@pytest.fixture
def hook(settings: Any) -> Iterator[responses.RequestsMock]:
    """The chat webhook: answers 200 "ok" as Slack does, and keeps every body posted to it."""
    settings.ALERT_WEBHOOK_URL = HOOK
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, HOOK, body="ok")
        yield mock


def posted(hook: responses.RequestsMock) -> list[dict[str, Any]]:
    return [json.loads(call.request.body or b"") for call in hook.calls]


def ingest(api: Any, record_id: str = "c-1") -> None:
    """A contact from System A: default routing gives it a job for salesforce and one for outreach."""
    body = {"operation": "create", "record_id": record_id, "object_type": "contact", "data": {"email": "a@b.example"}}
    assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202


def waited(target: str, seconds: float, now: datetime) -> None:
    """The target's due jobs have been waiting this long."""
    SyncJob.objects.filter(target__name=target).update(updated_at=now - timedelta(seconds=seconds))


def attempts(target: str, outcome: str, count: int, at: datetime) -> None:
    job = SyncJob.objects.filter(target__name=target).first()
    assert job is not None
    SyncAttempt.objects.bulk_create(
        SyncAttempt(job=job, version=job.version, started_at=at, finished_at=at, outcome=outcome) for _ in range(count)
    )


def the_alert(target: str, kind: str = AlertKind.LAG) -> Alert:
    return Alert.objects.get(connection__name=target, kind=kind)


pytestmark = pytest.mark.django_db


def test_lag_over_the_threshold_opens_one_alert_logs_it_and_announces_it_once(api, thresholds, hook, caplog):
    ingest(api)
    now = timezone.now()
    waited("salesforce", 700, now)

    with caplog.at_level(logging.WARNING, logger="recordsync.alerts"):
        counts = alerts_check(now=now)

    assert counts["opened"] == 1 and counts["sent"] == 1
    alert = the_alert("salesforce")
    assert (alert.state, alert.value, alert.threshold) == (AlertState.OPEN, 700.0, 600.0)
    assert alert.opened_sent_at == now and alert.last_send_error == ""
    assert not Alert.objects.filter(connection__name="outreach").exists()  # its job is fresh
    (record,) = [r for r in caplog.records if r.name == "recordsync.alerts"]
    assert record.levelno == logging.WARNING
    assert (record.connection, record.kind, record.value, record.threshold) == ("salesforce", "lag", 700.0, 600)
    # The shape docs/alerts.md shows: Slack's `text`, plus one attachment with the facts.
    assert posted(hook) == [
        {
            "text": "Record Sync: salesforce: the oldest due job has waited 11m 40s (threshold 10m)",
            "attachments": [
                {
                    "color": "#d9534f",
                    "fields": [
                        {"title": title, "value": value, "short": True}
                        for title, value in (
                            ("Connection", "salesforce"),
                            ("Alert", "lag"),
                            ("State", "open"),
                            ("Value", "11m 40s"),
                            ("Threshold", "10m"),
                            ("Opened", now.isoformat()),
                        )
                    ],
                    "footer": f"recordsync alert {alert.pk}",
                }
            ],
        }
    ]


def test_a_second_check_while_still_over_updates_the_alert_and_sends_nothing_new(api, thresholds, hook):
    ingest(api)
    now = timezone.now()
    waited("salesforce", 700, now)
    alerts_check(now=now)

    later = now + timedelta(seconds=60)
    counts = alerts_check(now=later)

    assert counts["opened"] == 0 and counts["updated"] == 1 and counts["sent"] == 0
    alert = the_alert("salesforce")
    assert (alert.value, alert.last_seen_at, alert.opened_at) == (760.0, later, now)
    assert len(posted(hook)) == 1


def test_clearing_resolves_the_alert_and_sends_the_resolve_once_and_a_new_crossing_is_a_new_incident(
    api, thresholds, hook
):
    ingest(api)
    now = timezone.now()
    waited("salesforce", 700, now)
    alerts_check(now=now)
    SyncJob.objects.filter(target__name="salesforce").update(state="synced")  # the backlog went out

    cleared = now + timedelta(minutes=5)
    counts = alerts_check(now=cleared)
    alerts_check(now=cleared + timedelta(minutes=1))

    alert = the_alert("salesforce")
    assert counts["resolved"] == 1
    assert (alert.state, alert.resolved_at, alert.resolved_sent_at, alert.value) == (
        AlertState.RESOLVED,
        cleared,
        cleared,
        0.0,
    )
    opening, resolve = posted(hook)
    assert resolve["text"] == ("Resolved: Record Sync: salesforce: lag alert after 5m: back to 0s (threshold 10m)")
    assert resolve["attachments"][0]["color"] != opening["attachments"][0]["color"]

    ingest(api, "c-2")
    again = cleared + timedelta(hours=1)
    waited("salesforce", 900, again)
    alerts_check(now=again)

    incidents = Alert.objects.filter(connection__name="salesforce").order_by("opened_at")
    assert [(a.state, a.opened_at) for a in incidents] == [(AlertState.RESOLVED, now), (AlertState.OPEN, again)]
    assert [m["text"] for m in posted(hook)].count(incidents[1].message) == 1


def test_a_job_waiting_for_its_next_attempt_is_not_lag_until_that_attempt_is_due(api, thresholds, hook):
    ingest(api)
    now = timezone.now()
    SyncJob.objects.filter(target__name="salesforce").update(
        state="retrying", updated_at=now - timedelta(seconds=700), next_attempt_at=now + timedelta(seconds=60)
    )

    assert alerts_check(now=now)["opened"] == 0

    due = now + timedelta(seconds=61)
    assert alerts_check(now=due)["opened"] == 1
    assert the_alert("salesforce").value == 761.0


def test_a_failure_share_over_fewer_than_the_minimum_attempts_does_not_alert(api, thresholds, hook):
    ingest(api)
    now = timezone.now()
    attempts("salesforce", AttemptOutcome.ERROR, 9, now - timedelta(seconds=30))

    assert alerts_check(now=now)["opened"] == 0

    attempts("salesforce", AttemptOutcome.ERROR, 1, now - timedelta(seconds=10))
    assert alerts_check(now=now)["opened"] == 1
    alert = the_alert("salesforce", AlertKind.FAILURES)
    assert alert.value == 100.0
    assert alert.message == (
        "Record Sync: salesforce: 100% of attempts failed: 10 of 10 attempts in the last 15m (threshold 50%)"
    )


def test_the_failure_share_counts_errors_and_successes_in_the_window_only(api, thresholds, hook):
    ingest(api)
    now = timezone.now()
    attempts("salesforce", AttemptOutcome.ERROR, 6, now - timedelta(seconds=60))
    attempts("salesforce", AttemptOutcome.SUCCESS, 4, now - timedelta(seconds=60))
    attempts("salesforce", AttemptOutcome.SKIPPED, 30, now - timedelta(seconds=60))  # not an answer either way
    attempts("salesforce", AttemptOutcome.SUCCESS, 20, now - timedelta(seconds=901))  # before the window
    attempts("outreach", AttemptOutcome.SUCCESS, 40, now - timedelta(seconds=60))  # another target

    alerts_check(now=now)

    assert the_alert("salesforce", AlertKind.FAILURES).value == 60.0
    assert not Alert.objects.filter(connection__name="outreach").exists()


def test_too_few_attempts_neither_opens_nor_clears_a_failure_alert(api, thresholds, hook):
    ingest(api)
    now = timezone.now()
    attempts("salesforce", AttemptOutcome.ERROR, 10, now - timedelta(seconds=60))
    alerts_check(now=now)

    # The window moved past those attempts and only two new ones were made: no evidence of recovery.
    later = now + timedelta(seconds=1000)
    attempts("salesforce", AttemptOutcome.SUCCESS, 2, later - timedelta(seconds=5))
    alerts_check(now=later)
    assert the_alert("salesforce", AlertKind.FAILURES).state == AlertState.OPEN

    attempts("salesforce", AttemptOutcome.SUCCESS, 8, later - timedelta(seconds=5))
    alerts_check(now=later)
    assert the_alert("salesforce", AlertKind.FAILURES).state == AlertState.RESOLVED


def test_a_breaker_open_longer_than_the_threshold_alerts_even_though_each_failed_probe_reopens_it(
    api, thresholds, hook
):
    salesforce = thresholds["salesforce"]
    config_override_set(values={"breaker_cooldown": 30}, connection="salesforce", actor="test")
    config.forget()
    opened = timezone.now()
    breaker_failure(salesforce, reason="503 from the org", now=opened, probe=False, at_once=True)
    # Every cool-down one probe goes and fails, opening it again with a fresh opened_at.
    for probe_at in (opened + timedelta(seconds=s) for s in (30, 60, 90, 120, 150, 180, 210, 240, 270)):
        assert breaker_allow(salesforce, probe_at)[0] == Gate.PROBE
        breaker_failure(salesforce, reason="503 again", now=probe_at, probe=True)

    assert alerts_check(now=opened + timedelta(seconds=280))["opened"] == 0
    counts = alerts_check(now=opened + timedelta(seconds=310))

    assert counts["opened"] == 1
    alert = the_alert("salesforce", AlertKind.BREAKER_OPEN)
    assert 305 <= alert.value <= 310 and alert.threshold == 300.0
    assert "circuit breaker has not closed for 5m" in posted(hook)[0]["text"]

    assert breaker_allow(salesforce, opened + timedelta(seconds=330))[0] == Gate.PROBE
    breaker_success(salesforce, probe=True)
    alerts_check(now=opened + timedelta(seconds=340))
    assert the_alert("salesforce", AlertKind.BREAKER_OPEN).state == AlertState.RESOLVED
    assert [m["text"].startswith("Resolved:") for m in posted(hook)] == [False, True]


def test_a_threshold_of_zero_turns_that_kind_off_and_resolves_what_it_had_open(api, thresholds, hook):
    ingest(api)
    now = timezone.now()
    waited("salesforce", 700, now)
    attempts("salesforce", AttemptOutcome.ERROR, 10, now - timedelta(seconds=60))
    config_override_set(values={"alert_lag_seconds": 0}, connection=None, actor="test")
    config.forget()

    alerts_check(now=now)

    assert [a.kind for a in alerts_open()] == [AlertKind.FAILURES]  # the other kinds still alert

    config_override_set(values={"alert_lag_seconds": 600}, connection=None, actor="test")
    config.forget()
    alerts_check(now=now)
    config_override_set(values={"alert_lag_seconds": 0}, connection=None, actor="test")
    config.forget()
    counts = alerts_check(now=now + timedelta(seconds=60))

    assert counts["resolved"] == 1 and the_alert("salesforce").state == AlertState.RESOLVED
    assert posted(hook)[-1]["text"].endswith("lag alert after 1m: alerting for it was turned off")


def test_a_webhook_that_is_down_gets_the_message_on_a_later_check(api, thresholds, hook, caplog):
    hook.replace(responses.POST, HOOK, status=500, body="internal_error")
    ingest(api)
    now = timezone.now()
    waited("salesforce", 700, now)

    with caplog.at_level(logging.INFO):
        counts = alerts_check(now=now)

    alert = the_alert("salesforce")
    assert counts["opened"] == 1 and counts["sent"] == 0 and counts["send_failed"] == 1
    assert alert.opened_sent_at is None
    assert alert.last_send_error == f"{now.isoformat()}: HTTP 500: internal_error"

    hook.replace(responses.POST, HOOK, body=requests.ConnectionError("refused"))
    later = now + timedelta(seconds=60)
    with caplog.at_level(logging.INFO):
        alerts_check(now=later)
    error = the_alert("salesforce").last_send_error
    assert error == f"{later.isoformat()}: POST https://hooks.example.test/… could not connect"
    # A Slack webhook's path is its secret: neither the row nor any log line may hold it.
    assert all("B0000" not in json.dumps(vars(r), default=str) for r in caplog.records)
    assert [r.url for r in caplog.records if r.name == "recordsync.http"] == ["https://hooks.example.test/…"] * 2

    hook.replace(responses.POST, HOOK, body="ok")
    recovered = now + timedelta(seconds=120)
    assert alerts_check(now=recovered)["sent"] == 1

    alert = the_alert("salesforce")
    assert alert.opened_sent_at == recovered and alert.last_send_error == ""
    assert len(posted(hook)) == 3  # 500, refused, delivered
    assert alerts_check(now=recovered)["sent"] == 0


def test_an_incident_that_cleared_while_the_webhook_was_down_is_announced_opening_first(api, thresholds, hook):
    hook.replace(responses.POST, HOOK, status=503)
    ingest(api)
    now = timezone.now()
    waited("salesforce", 700, now)
    alerts_check(now=now)
    SyncJob.objects.filter(target__name="salesforce").update(state="synced")
    alerts_check(now=now + timedelta(seconds=60))
    assert the_alert("salesforce").state == AlertState.RESOLVED

    hook.replace(responses.POST, HOOK, body="ok")
    counts = alerts_check(now=now + timedelta(seconds=120))

    assert counts["sent"] == 2
    texts = [m["text"] for m in posted(hook)[-2:]]
    assert not texts[0].startswith("Resolved:") and texts[1].startswith("Resolved:")


def test_setting_a_webhook_later_announces_recent_incidents_but_not_long_cleared_ones(api, thresholds, settings):
    settings.ALERT_WEBHOOK_URL = ""
    salesforce, outreach = thresholds["salesforce"], thresholds["outreach"]
    now = timezone.now()
    for connection, cleared in ((salesforce, now - timedelta(days=2)), (outreach, now - timedelta(hours=1))):
        Alert.objects.create(
            connection=connection,
            kind=AlertKind.LAG,
            value=0,
            threshold=600,
            message="lag",
            state=AlertState.RESOLVED,
            opened_at=cleared - timedelta(hours=1),
            resolved_at=cleared,
        )
    ingest(api)
    waited("salesforce", 700, now)
    alerts_check(now=now)  # opened, recorded, not sent

    settings.ALERT_WEBHOOK_URL = HOOK
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, HOOK, body="ok")
        counts = alerts_check(now=now + timedelta(seconds=60))
        texts = [json.loads(call.request.body or b"")["text"] for call in mock.calls]

    assert counts["sent"] == 3
    assert texts == [
        "lag",
        "Resolved: Record Sync: outreach: lag alert after 1h: back to 0s (threshold 10m)",
        "Record Sync: salesforce: the oldest due job has waited 11m 40s (threshold 10m)",
    ]
    stale = Alert.objects.get(connection=salesforce, state=AlertState.RESOLVED)
    assert stale.opened_sent_at is None and stale.resolved_sent_at is None


def test_a_per_connection_threshold_applies_to_that_connection_only(api, staff_api, thresholds, hook):
    response = staff_api.post(
        "/v1/sync/config-override", {"connection": "outreach", "alert_lag_seconds": 60}, format="json"
    )
    assert response.status_code == 200, response.content
    config.forget()
    ingest(api)
    now = timezone.now()
    waited("salesforce", 120, now)
    waited("outreach", 120, now)

    alerts_check(now=now)

    assert [(a.connection.name, a.threshold) for a in alerts_open()] == [("outreach", 60.0)]

    config_override_set(values={"alert_lag_seconds": None}, connection="outreach", actor="test")
    config.forget()
    alerts_check(now=now)
    assert alerts_open() == []


def test_without_a_webhook_alerts_are_recorded_and_logged_and_nothing_is_sent(api, thresholds, settings, caplog):
    settings.ALERT_WEBHOOK_URL = ""
    ingest(api)
    now = timezone.now()
    waited("outreach", 700, now)

    with responses.RequestsMock() as nothing, caplog.at_level(logging.WARNING, logger="recordsync.alerts"):
        counts = alerts_check(now=now)

    assert counts["opened"] == 1 and counts["sent"] == 0 and len(nothing.calls) == 0
    assert the_alert("outreach").opened_sent_at is None
    assert [r.getMessage() for r in caplog.records if r.name == "recordsync.alerts"] == ["alert opened"]


def test_a_disabled_connection_has_its_open_alerts_resolved(api, thresholds, hook):
    ingest(api)
    now = timezone.now()
    waited("salesforce", 700, now)
    alerts_check(now=now)
    Connection.objects.filter(name="salesforce").update(enabled=False)

    alerts_check(now=now + timedelta(seconds=60))

    assert the_alert("salesforce").state == AlertState.RESOLVED
    assert posted(hook)[-1]["text"].endswith("the connection was disabled")


def test_a_second_checker_opening_the_same_alert_is_refused_by_the_constraint(thresholds):
    salesforce = thresholds["salesforce"]
    reading = Reading(AlertKind.LAG, 700.0, 600)
    now = timezone.now()

    assert alert_open(salesforce, reading, now) is True
    assert alert_open(salesforce, reading, now) is False
    assert Alert.objects.count() == 1


def test_the_dashboard_selectors_list_open_alerts_oldest_first_and_recent_ones_newest_first(thresholds):
    now = timezone.now()
    salesforce, outreach = thresholds["salesforce"], thresholds["outreach"]
    old = Alert.objects.create(
        connection=salesforce, kind=AlertKind.LAG, value=1, threshold=1, message="m", opened_at=now - timedelta(hours=2)
    )
    done = Alert.objects.create(
        connection=salesforce,
        kind=AlertKind.FAILURES,
        value=1,
        threshold=1,
        message="m",
        state=AlertState.RESOLVED,
        opened_at=now - timedelta(hours=1),
    )
    new = Alert.objects.create(
        connection=outreach, kind=AlertKind.LAG, value=1, threshold=1, message="m", opened_at=now
    )

    assert alerts_open() == [old, new]
    assert alerts_recent() == [new, done, old]
    assert alerts_recent(limit=2) == [new, done]


def test_the_scheduled_entry_point_checks_with_the_current_time(api, thresholds, hook):
    ingest(api)
    waited("salesforce", 700, timezone.now())

    counts = tasks.alerts_scheduled()

    assert counts["opened"] == 1 and the_alert("salesforce").opened_at <= timezone.now()


def test_the_every_minute_schedule_is_installed_by_the_migrations() -> None:
    from django_q.models import Schedule

    row = Schedule.objects.get(name="sync-alerts")

    assert (row.func, row.schedule_type, row.minutes, row.repeats) == (
        "sync.tasks.alerts_scheduled",
        Schedule.MINUTES,
        1,
        -1,
    )
    assert import_string(row.func) is tasks.alerts_scheduled
    assert import_string("sync.alerts.alerts_scheduled") is tasks.alerts_scheduled  # the old path, for one release


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_checks_delivering_at_once_announce_an_incident_once(connections, settings):
    settings.ALERT_WEBHOOK_URL = HOOK
    now = timezone.now()
    Alert.objects.create(
        connection=connections["salesforce"], kind=AlertKind.LAG, value=700, threshold=600, message="lag", opened_at=now
    )

    def slow_ok(request: Any) -> tuple[int, dict[str, str], str]:
        time.sleep(0.5)  # the second check arrives while the first is still sending
        return 200, {}, "ok"

    results: list[dict[str, int]] = []

    def deliver() -> None:
        try:
            results.append(alerts_deliver(now=now))
        finally:
            from django.db import connection

            connection.close()

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, HOOK, callback=slow_ok)
        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(mock.calls) == 1
    assert sorted(r["sent"] for r in results) == [0, 1]
    assert Alert.objects.get().opened_sent_at == now
