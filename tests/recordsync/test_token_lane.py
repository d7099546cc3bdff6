"""Token API calls pass by Django's session, CSRF, user and messages middleware; everyone else gets them all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory

from recordsync.middleware import token_api_call
from rules.models import Rule

pytestmark = pytest.mark.django_db

EVENT = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": {"email": "a@example.com"}}


def post_event(client: Any) -> Any:
    return client.post("/v1/sync/", data=json.dumps(EVENT), content_type="application/json")


def test_a_token_call_is_accepted_without_session_cookies_and_with_the_security_headers(api, connections):
    answer = post_event(api)

    assert answer.status_code == 202
    assert answer.cookies == {}  # no session, CSRF or messages cookie
    assert not hasattr(answer.wsgi_request, "session") and not hasattr(answer.wsgi_request, "_messages")
    assert answer["X-Content-Type-Options"] == "nosniff" and answer["X-Frame-Options"] == "DENY"


def test_staff_with_their_admin_session_still_use_the_api(connections):
    staff = get_user_model().objects.create_user("ops-session", password="x", is_staff=True)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)

    page = browser.get("/v1/sync/jobs")
    assert page.status_code == 200 and page.wsgi_request.session.session_key
    refused = post_event(browser)  # a session write without the CSRF token: DRF's session check refuses it
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]


def test_a_bad_token_beside_a_good_session_is_refused_not_read_as_the_session(connections):
    staff = get_user_model().objects.create_user("ops-both", password="x", is_staff=True)
    browser = Client()
    browser.force_login(staff)

    answer = browser.get("/v1/sync/jobs", HTTP_AUTHORIZATION="Token not-a-token")

    assert answer.status_code == 401


def test_history_still_names_who_changed_the_rules_through_a_token(staff_api, connections):
    rule = {"name": "contacts", "match_object_type": "contact", "targets": [{"target": "salesforce", "mapping": {}}]}

    assert staff_api.post("/v1/sync/rules", {"rules": [rule]}, format="json").status_code == 200

    assert Rule.history.filter(name="contacts").latest("history_date").history_user.username == "ops"


@pytest.mark.parametrize(
    ("path", "authorization", "expected"),
    [
        ("/v1/sync/", "Token abc", True),
        ("/v1/sync/jobs", "Token abc", True),
        ("/v1/sync/", "", False),
        ("/v1/sync/", "Bearer abc", False),
        ("/admin/", "Token abc", False),
        ("/dashboard/", "Token abc", False),
    ],
)
def test_only_calls_to_the_api_with_a_token_take_the_short_way(path, authorization, expected):
    request = RequestFactory().get(path, HTTP_AUTHORIZATION=authorization)

    assert token_api_call(request) is expected
