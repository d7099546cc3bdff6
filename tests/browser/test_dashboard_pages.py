"""The dashboard's pages and its retry endpoint through Django's test client: who may see them, what a
retry changes and what it never touches. No browser needed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crms.models import Connection
from sync.models import JobState, SyncConflict, SyncJob
from tests.browser.conftest import job_with_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def salesforce() -> Connection:
    return Connection.objects.create(name="salesforce", kind="salesforce")


def _failed(target: Connection, record_id: str, code: str, *, state: str = JobState.FAILED) -> SyncJob:
    return job_with_event(
        target,
        record_id,
        state,
        timezone.now() - timedelta(minutes=5),
        attempts=3,
        last_error_code=code,
        last_error_message=f"{code} for {record_id}",
    )


@pytest.mark.parametrize("name", ["dashboard:overview", "dashboard:issues"])
def test_strangers_and_non_staff_users_are_sent_to_the_admin_login(client: Client, name: str) -> None:
    url = reverse(name)
    assert client.get(url).url == f"{reverse('admin:login')}?next={url}"  # type: ignore[attr-defined]
    client.force_login(
        User.objects.create_user("someone", password="not-staff-password")
    )  # (login() needs a request: axes)
    assert client.get(url).url == f"{reverse('admin:login')}?next={url}"  # type: ignore[attr-defined]


def test_both_pages_render_with_nothing_in_the_database(admin_client: Client) -> None:
    overview = admin_client.get(reverse("dashboard:overview"))
    assert overview.status_code == 200 and b"No open alerts." in overview.content
    assert b'id="dashboard-charts"' in overview.content and b"chart.umd.min.js" in overview.content
    issues = admin_client.get(reverse("dashboard:issues"))
    assert issues.status_code == 200 and b"Nothing failed or held." in issues.content


def test_retry_all_retries_only_the_failed_jobs_of_that_error(admin_client: Client, salesforce: Connection) -> None:
    refused = [_failed(salesforce, f"c-{i}", "HTTP_400") for i in range(3)]
    other = _failed(salesforce, "c-9", "HTTP_401")
    retrying = _failed(salesforce, "c-8", "HTTP_400", state=JobState.RETRYING)

    response = admin_client.post(reverse("dashboard:retry"), {"group": "HTTP_400"}, follow=True)

    assert response.redirect_chain == [(reverse("dashboard:issues"), 302)]
    assert b"Retried 3 job(s) with error HTTP_400" in response.content
    states = dict(SyncJob.objects.values_list("record_id", "state"))
    assert [states[j.record_id] for j in refused] == [JobState.PENDING] * 3
    assert states[other.record_id] == JobState.FAILED and states[retrying.record_id] == JobState.RETRYING
    assert SyncJob.objects.get(pk=refused[0].pk).attempts == 0


def test_a_group_without_an_error_code_can_be_retried_too(admin_client: Client, salesforce: Connection) -> None:
    job = _failed(salesforce, "c-1", "")
    assert b"(no error code)" in admin_client.get(reverse("dashboard:issues")).content

    admin_client.post(reverse("dashboard:retry"), {"group": ""})

    assert SyncJob.objects.get(pk=job.pk).state == JobState.PENDING


def test_a_held_job_is_never_retried_it_waits_for_its_conflict(admin_client: Client, salesforce: Connection) -> None:
    held = _failed(salesforce, "c-1", "CONFLICT_HELD", state=JobState.HELD)

    response = admin_client.post(reverse("dashboard:retry"), {"job": str(held.pk)}, follow=True)

    assert b"Nothing retried (job" in response.content
    assert SyncJob.objects.get(pk=held.pk).state == JobState.HELD


def test_retry_takes_only_a_post_that_names_its_jobs_with_a_csrf_token(salesforce: Connection) -> None:
    job = _failed(salesforce, "c-1", "HTTP_400")
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "dashboard-tests-only"))
    url = reverse("dashboard:retry")

    assert client.get(url, {"job": job.pk}).status_code == 405
    assert client.post(url, {"job": job.pk}).status_code == 403  # no CSRF token
    page = client.get(reverse("dashboard:issues"))
    token = page.context["csrf_token"]
    assert client.post(url, {"csrfmiddlewaretoken": token}).status_code == 400  # which jobs?
    assert SyncJob.objects.get(pk=job.pk).state == JobState.FAILED
    assert client.post(url, {"csrfmiddlewaretoken": token, "job": job.pk}).status_code == 302
    assert SyncJob.objects.get(pk=job.pk).state == JobState.PENDING


def test_a_record_id_the_status_api_cannot_address_is_still_listed(
    admin_client: Client, salesforce: Connection
) -> None:
    _failed(salesforce, "folder/c-1", "HTTP_400")

    page = admin_client.get(reverse("dashboard:issues")).content.decode()

    assert "contact/folder/c-1" in page and "/v1/sync/status/folder" not in page


def test_every_link_of_an_issue_opens_for_the_staff_user(admin_client: Client, salesforce: Connection) -> None:
    failed = _failed(salesforce, "c-1", "HTTP_400")
    conflict = SyncConflict.objects.create(
        record_id="c-2",
        object_type="contact",
        connection=salesforce,
        external_object="Contact",
        external_id="003X",
        policy="manual",
    )
    _failed(salesforce, "c-2", "CONFLICT_HELD", state=JobState.HELD)
    page = admin_client.get(reverse("dashboard:issues")).content.decode()
    links = [
        reverse("admin:sync_syncjob_change", args=[failed.pk]),
        reverse("sync-status", args=["c-1"]) + "?object_type=contact&amp;source=system_a",
        reverse("admin:sync_syncconflict_resolve", args=[conflict.pk]),
    ]

    for link in links:
        assert f'href="{link}"' in page
        response = admin_client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link
    assert admin_client.get(links[1].replace("&amp;", "&")).json()["targets"][0]["state"] == JobState.FAILED
