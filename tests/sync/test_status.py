"""GET /v1/sync/status/{record_id}."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from sync.models import AttemptOutcome, JobState, RecordLink, SyncAttempt, SyncJob

pytestmark = pytest.mark.django_db


def ingest(client: Any, **event: Any) -> Any:
    body = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": {"email": "a@example.com"}}
    body.update(event)
    response = client.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()


def test_it_shows_each_targets_pending_job_and_the_event(api, connections):
    accepted = ingest(api)

    response = api.get(accepted["status_url"])

    assert response.status_code == 200
    body = response.json()
    assert [(t["target"], t["state"], t["attempts"]) for t in body["targets"]] == [
        ("outreach", "pending", 0),
        ("salesforce", "pending", 0),
    ]
    assert body["events"][0]["event_id"] == accepted["event_id"]
    assert body["events"][0]["routing"]["mode"] == "default"
    assert body["attempts"] == []


def test_times_are_iso_8601_with_an_offset(api, connections):
    ingest(api)

    target = api.get("/v1/sync/status/c-1").json()["targets"][0]

    assert target["created_at"].endswith("Z") or "+" in target["created_at"]


def test_an_unknown_record_is_404(api, connections):
    response = api.get("/v1/sync/status/never-seen")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_object_type_and_source_narrow_a_repeated_id(api, connections):
    ingest(api, object_type="contact")
    ingest(api, object_type="account", data={"domain": "example.com"})

    both = api.get("/v1/sync/status/c-1").json()
    accounts = api.get("/v1/sync/status/c-1?object_type=account").json()
    from_crm = api.get("/v1/sync/status/c-1?source=salesforce")

    assert {t["object_type"] for t in both["targets"]} == {"contact", "account"}
    assert {t["object_type"] for t in accounts["targets"]} == {"account"}
    assert from_crm.status_code == 404


def test_a_bad_filter_is_a_400_naming_it(api, connections):
    response = api.get("/v1/sync/status/c-1?object_type=not valid")

    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "object_type"


def test_it_shows_errors_attempts_and_the_external_id(api, connections):
    ingest(api)
    job = SyncJob.objects.get(target__name="salesforce")
    SyncJob.objects.filter(pk=job.pk).update(
        state=JobState.RETRYING,
        attempts=1,
        last_error_code="UNABLE_TO_LOCK_ROW",
        last_error_message="locked",
        last_error_permanent=False,
    )
    SyncAttempt.objects.create(
        job=job,
        version=1,
        finished_at=timezone.now(),
        outcome=AttemptOutcome.ERROR,
        http_status=400,
        error_code="UNABLE_TO_LOCK_ROW",
        error_message="locked",
        duration_ms=12,
    )
    RecordLink.objects.create(
        object_type="contact",
        record_id="c-1",
        system=connections["salesforce"],
        external_object="Contact",
        external_id="003000000000001AAA",
    )

    body = api.get("/v1/sync/status/c-1").json()

    salesforce = next(t for t in body["targets"] if t["target"] == "salesforce")
    assert salesforce["state"] == "retrying"
    assert salesforce["last_error"] == {"code": "UNABLE_TO_LOCK_ROW", "message": "locked", "permanent": False}
    assert salesforce["external_id"] == "003000000000001AAA"
    assert body["attempts"][0]["target"] == "salesforce"
    assert body["attempts"][0]["http_status"] == 400


def test_status_needs_a_token(anon, connections):
    assert anon.get("/v1/sync/status/c-1").status_code == 401


def test_an_event_routed_nowhere_still_has_a_status(api):
    ingest(api)

    body = api.get("/v1/sync/status/c-1").json()

    assert body["targets"] == []
    assert body["events"][0]["routing"]["reason"] == "no enabled connection other than the source"
