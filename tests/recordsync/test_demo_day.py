"""The demo `make run` starts keeps syncing both ways for a whole day: tokens expire and rotate, cursors
move on, retention prunes, and every change still crosses. The clock is moved, not waited for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core.management import call_command
from django_q.conf import Conf

from crms.mocks.models import MockCall, MockRecord
from crms.models import Connection
from crms.outreach import mock_store as outreach_store
from crms.salesforce import mock_store as salesforce_store
from sync.management.commands.sync_dispatch import Command as Dispatcher
from sync.models import JobState, RecordLink, SyncJob

pytestmark = pytest.mark.django_db(transaction=True)
HOURS = 24
DONE = {JobState.SYNCED, JobState.SKIPPED, JobState.SUPERSEDED}


@pytest.fixture
def demo(live_server: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[None]:
    """`make run`'s set-up against this test's server, with django-q2 tasks run in line."""
    monkeypatch.setenv("PORT", str(urlsplit(live_server.url).port))
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]  # the demo's connections name 127.0.0.1
    monkeypatch.setattr(Conf, "SYNC", True)
    call_command("load_demo", stdout=StringIO())
    yield


def tick(passes: int = 6) -> None:
    """What the dispatcher does about once a second: due batches, due polls, due probes."""
    dispatcher = Dispatcher(stdout=StringIO(), stderr=StringIO())
    for _ in range(passes):
        if not dispatcher.dispatch_pass():
            return


def post(api: Any, body: dict[str, Any]) -> None:
    response = api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content


def crm_id(target: str, record_id: str) -> str:
    return RecordLink.objects.get(system=Connection.objects.get(name=target), record_id=record_id).external_id


def test_the_demo_keeps_syncing_both_ways_for_a_day(demo, api):
    start = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(start, tick=False) as clock:
        for hour in range(HOURS + 1):
            record_id = f"c-{hour}"
            post(
                api,
                {
                    "operation": "create",
                    "record_id": record_id,
                    "object_type": "contact",
                    "data": {"email": f"p{hour}@example.com", "first_name": f"P{hour}", "last_name": "Day"},
                },
            )
            clock.shift(timedelta(seconds=5))
            tick()
            if hour % 2 == 0:  # a Salesforce user edits it
                salesforce_store.staff_push(
                    "Contact", [{"Id": crm_id("salesforce", record_id), "LastName": f"Sales{hour}"}], []
                )
            else:  # an Outreach user edits it (the mock calls the webhook back)
                outreach_store.staff_push(
                    "prospect", [{"id": int(crm_id("outreach", record_id)), "firstName": f"Reach{hour}"}], []
                )
            clock.shift(timedelta(minutes=2))  # a poll is due and getDeleted's minute is over
            tick()
            if hour in (12, 24):
                call_command("sync_prune", stdout=StringIO())
            clock.shift(timedelta(minutes=58))
        tick()

    in_a = {r.record_id: r.fields for r in MockRecord.objects.filter(system="system_a", deleted_at__isnull=True)}
    in_sf = {r.fields.get("RecordSync_Id__c"): r.fields for r in salesforce_store.live("Contact")}
    in_ol = {r.fields["emails"][0]: r.fields for r in outreach_store.live("prospect")}
    for hour in range(HOURS + 1):
        assert in_sf[f"c-{hour}"]["Email"] == f"p{hour}@example.com"
        assert f"p{hour}@example.com" in in_ol
        expected = {"last_name": f"Sales{hour}"} if hour % 2 == 0 else {"first_name": f"Reach{hour}"}
        assert {k: in_a[f"c-{hour}"].get(k) for k in expected} == expected, hour
    stuck = SyncJob.objects.exclude(state__in=DONE).values_list("record_id", "target__name", "state", "last_error_code")
    assert list(stuck) == []
    refreshes = MockCall.objects.filter(system="outreach", path__endswith="/oauth/token", status=200).count()
    logins = MockCall.objects.filter(system="salesforce", path__endswith="/oauth2/token", status=200).count()
    assert refreshes >= HOURS // 2 and logins >= HOURS // 2  # access tokens last two hours: each was renewed
    assert not MockCall.objects.filter(status__gte=500).exists()
