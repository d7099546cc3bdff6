"""Manual retry: the API, manage.py sync_retry and the admin action."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sync.models import JobState, SyncJob

pytestmark = pytest.mark.django_db


def ingest(client: Any, record_id: str = "c-1", object_type: str = "contact") -> None:
    body = {"operation": "create", "record_id": record_id, "object_type": object_type, "data": {"email": "a@b.example"}}
    assert client.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202


def fail(record_id: str = "c-1", target: str = "salesforce", code: str = "UNABLE_TO_LOCK_ROW") -> None:
    SyncJob.objects.filter(record_id=record_id, target__name=target).update(
        state=JobState.FAILED, attempts=8, last_error_code=code, last_error_message="locked"
    )


def retry(client: Any, record_id: str = "c-1", **body: Any) -> Any:
    return client.post(f"/v1/sync/retry/{record_id}", body, format="json")


def test_a_failed_job_is_sent_back_to_pending_once(api, connections):
    ingest(api)
    fail()

    first = retry(api)
    second = retry(api)

    assert first.status_code == 202
    assert first.json() == {"record_id": "c-1", "jobs": [{"target": "salesforce", "state": "pending"}]}
    job = SyncJob.objects.get(target__name="salesforce")
    assert (job.state, job.attempts) == (JobState.PENDING, 0)
    assert second.status_code == 409 and second.json()["error"]["code"] == "nothing_to_retry"


def test_retry_can_name_the_target(api, connections):
    ingest(api)
    fail(target="salesforce")
    fail(target="outreach")

    answer = retry(api, target="outreach").json()

    assert answer["jobs"] == [{"target": "outreach", "state": "pending"}]
    assert SyncJob.objects.get(target__name="salesforce").state == JobState.FAILED


def test_an_unknown_record_is_404(api, connections):
    assert retry(api, "nope").status_code == 404


def test_an_id_shared_by_two_object_types_is_409_until_narrowed(api, connections):
    ingest(api, object_type="contact")
    ingest(api, object_type="account")
    fail()

    ambiguous = retry(api)
    narrowed = retry(api, object_type="contact")

    assert ambiguous.status_code == 409 and ambiguous.json()["error"]["code"] == "ambiguous_record"
    assert narrowed.status_code == 202


def test_a_bad_body_is_400_naming_the_field(api, connections):
    ingest(api)

    response = retry(api, tagret="salesforce")

    assert response.status_code == 400 and response.json()["error"]["fields"][0]["field"] == "tagret"


def test_retry_needs_a_token(anon, connections):
    assert retry(anon).status_code == 401


def test_the_command_retries_by_filter_and_a_dry_run_changes_nothing(api, connections):
    for record_id in ("a", "b", "c"):
        ingest(api, record_id)
    fail("a", code="UNABLE_TO_LOCK_ROW")
    fail("b", code="REQUIRED_FIELD_MISSING")
    fail("c", target="outreach", code="UNABLE_TO_LOCK_ROW")

    dry = StringIO()
    call_command("sync_retry", "--error-code", "UNABLE_TO_LOCK_ROW", "--dry-run", stdout=dry)
    assert "would retry 2 job(s) in all" in dry.getvalue()
    assert SyncJob.objects.filter(state=JobState.FAILED).count() == 3

    out = StringIO()
    call_command(
        "sync_retry", "--error-code", "UNABLE_TO_LOCK_ROW", "--target", "salesforce", stdout=out, stderr=StringIO()
    )
    again = StringIO()
    call_command(
        "sync_retry", "--error-code", "UNABLE_TO_LOCK_ROW", "--target", "salesforce", stdout=again, stderr=StringIO()
    )

    assert out.getvalue().strip() == "retried 1 job(s)"
    assert again.getvalue().strip() == "retried 0 job(s)"
    assert SyncJob.objects.get(record_id="a", target__name="salesforce").state == JobState.PENDING
    assert SyncJob.objects.filter(state=JobState.FAILED).count() == 2


def test_the_command_refuses_a_naive_since(connections):
    with pytest.raises(CommandError, match="UTC offset"):
        call_command("sync_retry", "--since", "2026-11-25T09:00:00")


def test_the_admin_action_retries_the_selected_jobs(api, connections, admin_client):
    ingest(api)
    fail()
    job = SyncJob.objects.get(target__name="salesforce")

    response = admin_client.post(
        "/admin/sync/syncjob/", {"action": "retry_jobs", "_selected_action": [job.pk]}, follow=True
    )

    assert "1 job(s) sent back to pending" in response.content.decode()
    job.refresh_from_db()
    assert job.state == JobState.PENDING
