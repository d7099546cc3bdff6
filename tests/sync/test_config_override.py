"""POST /v1/sync/config-override: live engine settings, validated, recorded, applied within a second."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from sync.delivery import config, engine
from sync.models import ConfigOverride, JobClaim

pytestmark = pytest.mark.django_db
URL = "/v1/sync/config-override"


def override(client: Any, **body: Any) -> Any:
    return client.post(URL, body, format="json")


def test_it_shows_the_defaults_and_what_each_connection_uses(staff_api, connections, settings):
    body = staff_api.get(URL).json()

    assert body["defaults"] == {
        "batch_size": settings.SYNC_BATCH_SIZE,
        "flush_interval": settings.SYNC_FLUSH_INTERVAL,
        "max_attempts": settings.SYNC_MAX_ATTEMPTS,
        "rate_limit_calls": settings.SYNC_RATE_LIMIT_CALLS,
        "rate_limit_window": settings.SYNC_RATE_LIMIT_WINDOW,
        "breaker_failures": settings.SYNC_BREAKER_FAILURES,
        "breaker_cooldown": settings.SYNC_BREAKER_COOLDOWN,
        "quota_slow_down_percent": settings.SYNC_QUOTA_SLOW_DOWN_PERCENT,
        "poll_interval": settings.SYNC_POLL_INTERVAL,
        "alert_lag_seconds": settings.SYNC_ALERT_LAG_SECONDS,
        "alert_failure_percent": settings.SYNC_ALERT_FAILURE_PERCENT,
        "alert_failure_window": settings.SYNC_ALERT_FAILURE_WINDOW,
        "alert_breaker_open_seconds": settings.SYNC_ALERT_BREAKER_OPEN_SECONDS,
        "lane_live_reserve_percent": settings.SYNC_LANE_LIVE_RESERVE_PERCENT,
        "lane_read_reserve_percent": settings.SYNC_LANE_READ_RESERVE_PERCENT,
        "backfill_floor_percent": settings.SYNC_BACKFILL_FLOOR_PERCENT,
        "alert_allowance_hours": settings.SYNC_ALERT_ALLOWANCE_HOURS,
    }
    assert set(body["effective"]) == {"global", "outreach", "salesforce", "system_a"}
    assert body["overrides"] == {}


def test_a_global_then_a_connection_override_apply_in_that_order_and_record_who(staff_api, connections):
    override(staff_api, batch_size=50, flush_interval=5)
    body = override(staff_api, connection="salesforce", batch_size=10).json()

    assert body["effective"]["salesforce"] == {
        "batch_size": 10,
        "flush_interval": 5,
        "max_attempts": 8,
        "rate_limit_calls": 0,
        "rate_limit_window": 1,
        "breaker_failures": 5,
        "breaker_cooldown": 30,
        "quota_slow_down_percent": 90,
        "poll_interval": 60,
        "alert_lag_seconds": 600,
        "alert_failure_percent": 50,
        "alert_failure_window": 900,
        "alert_breaker_open_seconds": 300,
        "lane_live_reserve_percent": 20,
        "lane_read_reserve_percent": 10,
        "backfill_floor_percent": 25,
        "alert_allowance_hours": 6,
    }
    assert body["effective"]["outreach"]["batch_size"] == 50
    assert body["overrides"]["connection:salesforce"]["updated_by"] == "ops"
    assert body["overrides"]["global"]["values"] == {"batch_size": 50, "flush_interval": 5}


def test_null_drops_an_override(staff_api, connections, settings):
    override(staff_api, batch_size=50)

    body = override(staff_api, batch_size=None).json()

    assert body["effective"]["global"]["batch_size"] == settings.SYNC_BATCH_SIZE


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"max_attempts": "many"}, "max_attempts"),
        ({"connection": "nope", "batch_size": 5}, "connection"),
        ({"rate_limit": 5}, "rate_limit"),
        ({}, "batch_size"),
    ],
)
def test_bad_values_are_refused_naming_the_field_and_change_nothing(staff_api, connections, body, field):
    response = override(staff_api, **body)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"][0]["field"] == field
    assert not ConfigOverride.objects.exists()


def test_config_is_staff_only(api, connections):
    assert api.get(URL).status_code == 403
    assert override(api, batch_size=5).status_code == 403


def test_a_running_dispatcher_uses_a_new_batch_size_within_a_second(api, staff_api, connections, monkeypatch):
    now = [500.0]
    monkeypatch.setattr(config, "clock", lambda: now[0])
    for i in range(5):
        body = {
            "operation": "create",
            "record_id": f"c-{i}",
            "object_type": "contact",
            "data": {"email": "a@b.c"},
            "targets": ["salesforce"],
        }
        api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    salesforce = connections["salesforce"]
    config.effective(salesforce.pk)  # this process has read the settings

    override(staff_api, connection="salesforce", batch_size=2)
    now[0] += config.CHECK_SECONDS  # another process would notice within this long

    batches = engine.batches_claim(connection=salesforce, now=timezone.now() + timedelta(seconds=60))

    assert [len(b) for b in batches] == [2, 2, 1]
    assert JobClaim.objects.count() == 5


def test_overrides_are_editable_in_the_admin(admin_client, connections):
    response = admin_client.post("/admin/sync/configoverride/add/", {"connection": "", "values": '{"batch_size": 25}'})

    assert response.status_code == 302, response.content.decode()[:2000]
    assert config.effective(None).batch_size == 25
    bad = admin_client.post("/admin/sync/configoverride/add/", {"connection": "", "values": '{"batch_size": 0}'})
    assert "batch_size: Give a whole number" in bad.content.decode()
