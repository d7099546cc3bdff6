"""The query endpoints: GET /v1/sync/jobs (filters, cursor pages, order) and GET /v1/sync/events/{id}."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from sync.models import JobState, SyncJob

pytestmark = pytest.mark.django_db


def post(api: Any, record_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "operation": "create",
        "record_id": record_id,
        "object_type": "contact",
        "data": {"email": f"{record_id}@example.com"},
        **extra,
    }
    response = api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202
    answer: dict[str, Any] = response.json()
    return answer


def test_jobs_filter_by_state_target_and_error_code(api, connections):
    for n in range(5):
        post(api, f"c-{n}")
    SyncJob.objects.filter(record_id__in=["c-1", "c-3"], target__name="salesforce").update(
        state=JobState.FAILED, last_error_code="REQUIRED_FIELD_MISSING", last_error_message="LastName required"
    )

    failed = api.get("/v1/sync/jobs", {"state": "failed"}).json()["results"]
    in_sf = api.get("/v1/sync/jobs", {"target": "salesforce", "error_code": "REQUIRED_FIELD_MISSING"}).json()
    two_states = api.get("/v1/sync/jobs?state=failed&state=pending&target=outreach").json()["results"]

    assert sorted(j["record_id"] for j in failed) == ["c-1", "c-3"]
    assert {j["last_error"]["code"] for j in failed} == {"REQUIRED_FIELD_MISSING"}
    assert sorted(j["record_id"] for j in in_sf["results"]) == ["c-1", "c-3"]
    assert len(two_states) == 5 and {j["target"] for j in two_states} == {"outreach"}


def test_jobs_come_in_cursor_pages_newest_first_or_oldest_first(api, connections):
    now = timezone.now()
    for n in range(7):
        post(api, f"c-{n}", targets=["salesforce"])
        SyncJob.objects.filter(record_id=f"c-{n}").update(updated_at=now - timedelta(minutes=10 - n))

    first = api.get("/v1/sync/jobs", {"limit": 3}).json()
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json()
    oldest = api.get("/v1/sync/jobs", {"limit": 2, "order": "oldest"}).json()["results"]

    ids = [j["record_id"] for page in (first, second, third) for j in page["results"]]
    assert ids == [f"c-{n}" for n in range(6, -1, -1)]
    assert third["next"] is None
    assert [j["record_id"] for j in oldest] == ["c-0", "c-1"]


def test_jobs_filter_by_time_range(api, connections):
    now = timezone.now()
    post(api, "old", targets=["salesforce"])
    post(api, "new", targets=["salesforce"])
    SyncJob.objects.filter(record_id="old").update(updated_at=now - timedelta(hours=3))

    recent = api.get("/v1/sync/jobs", {"updated_after": (now - timedelta(hours=1)).isoformat()}).json()["results"]
    before = api.get("/v1/sync/jobs", {"updated_before": (now - timedelta(hours=1)).isoformat()}).json()["results"]

    assert [j["record_id"] for j in recent] == ["new"] and [j["record_id"] for j in before] == ["old"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "stuck"}, "state"),
        ({"limit": 0}, "limit"),
        ({"updated_after": "yesterday"}, "updated_after"),
        ({"stat": "failed"}, "stat"),
        ({"order": "random"}, "order"),
        ({"updated_after": "2026-11-25T10:00:00Z", "updated_before": "2026-11-25T09:00:00Z"}, "updated_before"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(api, connections, query, field):
    response = api.get("/v1/sync/jobs", query)

    assert response.status_code == 400
    assert [f["field"] for f in response.json()["error"]["fields"]] == [field]


def test_an_event_shows_its_decision_and_its_jobs_now(api, connections):
    answer = post(api, "c-1")
    SyncJob.objects.filter(target__name="salesforce").update(state=JobState.SYNCED)

    event = api.get(f"/v1/sync/events/{answer['event_id']}").json()

    assert event["record_id"] == "c-1" and event["payload"] == {"email": "c-1@example.com"}
    assert event["routing"]["mode"] == "default"
    assert {j["target"]: j["state"] for j in event["jobs"]} == {"outreach": "pending", "salesforce": "synced"}
    assert event["answer"] == {} or event["answer"]["event_id"] == answer["event_id"]


def test_an_unknown_or_malformed_event_id_is_a_404(api, connections):
    assert api.get("/v1/sync/events/00000000-0000-4000-8000-000000000000").status_code == 404
    assert api.get("/v1/sync/events/not-a-uuid").status_code == 404


def test_the_query_endpoints_need_a_token(client, connections):
    assert client.get("/v1/sync/jobs").status_code == 401
    assert client.get("/v1/sync/events/00000000-0000-4000-8000-000000000000").status_code == 401


def test_stats_count_jobs_per_state_and_target_and_show_lag(api, connections):
    for n in range(3):
        post(api, f"c-{n}", targets=["salesforce"])
    SyncJob.objects.filter(record_id="c-0").update(state=JobState.FAILED)
    SyncJob.objects.filter(record_id="c-1").update(updated_at=timezone.now() - timedelta(minutes=5))

    stats = api.get("/v1/sync/stats").json()

    assert stats["jobs"]["total"] == 3
    assert stats["jobs"]["by_target"]["salesforce"]["failed"] == 1
    assert stats["jobs"]["by_target"]["salesforce"]["pending"] == 2
    sf = next(row for row in stats["lag"] if row["connection"] == "salesforce")
    assert sf["due"] == 2 and sf["lag_seconds"] >= 300
    assert len(stats["throughput"]["per_minute"]) == 60 and len(stats["throughput"]["per_hour"]) == 24
    assert {b["connection"] for b in stats["breakers"]} == {"salesforce", "outreach", "system_a"}


def test_stats_need_a_token(client, connections):
    assert client.get("/v1/sync/stats").status_code == 401
