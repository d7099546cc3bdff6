"""The mock Outreach's OAuth: refresh tokens that rotate for as long as the chain goes on, and the
authorization-code grant behind an authorize step that redirects with single-use codes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from crms.mocks.models import MockToken
from crms.outreach import mock as outreach_mock

TOKEN = "/mock/outreach/oauth/token"
AUTHORIZE = "/mock/outreach/oauth/authorize"
REDIRECT = "https://sync.example.com/oauth/outreach?tenant=7"


@pytest.fixture
def oauth(db: None, settings: Any) -> Client:
    settings.MOCK_CRMS_ENABLED = True
    return Client()


def grant(client: Client, settings: Any, **form: str) -> Any:
    app = {"client_id": outreach_mock.app_client_id(), "client_secret": outreach_mock.app_client_secret()}
    return client.post(TOKEN, {**app, **form})


def refresh(client: Client, settings: Any, token: str) -> Any:
    return grant(client, settings, grant_type="refresh_token", refresh_token=token)


def authorize(client: Client, settings: Any, **query: str) -> Any:
    asked = {
        "client_id": outreach_mock.app_client_id(),
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "prospects.all accounts.read",
        "state": "xyz-123",
        **query,
    }
    return client.post(AUTHORIZE, {**asked, "decision": "allow"})  # the user clicks Authorize on the consent page


def redirected_to(answer: Any) -> tuple[str, dict[str, list[str]]]:
    assert answer.status_code == 302, answer.content
    where = urlsplit(answer["Location"])
    return f"{where.scheme}://{where.netloc}{where.path}", parse_qs(where.query)


def code_for(client: Client, settings: Any) -> str:
    _, query = redirected_to(authorize(client, settings))
    return query["code"][0]


def test_a_chain_of_fifty_refreshes_each_succeeds_and_returns_a_new_refresh_token(oauth, settings):
    token = outreach_mock.first_refresh_token()
    seen = {token}

    for _ in range(50):
        answer = refresh(oauth, settings, token)
        assert answer.status_code == 200, answer.content
        token = answer.json()["refresh_token"]
        assert token not in seen
        seen.add(token)

    assert answer.json()["expires_in"] == 7200 and answer.json()["token_type"] == "bearer"


def test_every_spent_refresh_token_of_a_chain_is_refused_with_invalid_grant(oauth, settings):
    chain = [outreach_mock.first_refresh_token()]
    for _ in range(3):
        chain.append(refresh(oauth, settings, chain[-1]).json()["refresh_token"])

    for spent in chain[:-1]:
        answer = refresh(oauth, settings, spent)
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    assert refresh(oauth, settings, chain[-1]).status_code == 200  # the newest one is still good


def test_an_expired_or_unknown_refresh_token_is_refused(oauth, settings):
    current = refresh(oauth, settings, outreach_mock.first_refresh_token()).json()["refresh_token"]
    MockToken.objects.filter(token=current).update(expires_at=timezone.now() - timedelta(seconds=1))

    for token in (current, "never-issued", ""):
        answer = refresh(oauth, settings, token)
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


def test_a_wrong_client_secret_is_401_invalid_client(oauth, settings):
    answer = oauth.post(
        TOKEN,
        {
            "client_id": outreach_mock.app_client_id(),
            "client_secret": "guess",
            "grant_type": "refresh_token",
            "refresh_token": outreach_mock.first_refresh_token(),
        },
    )

    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


def test_an_unknown_grant_type_is_400_unsupported_grant_type(oauth, settings):
    answer = grant(oauth, settings, grant_type="password", username="ada", password="x")

    assert (answer.status_code, answer.json()["error"]) == (400, "unsupported_grant_type")


def test_authorize_redirects_back_with_a_code_and_the_state_keeping_the_redirect_uris_own_query(oauth, settings):
    where, query = redirected_to(authorize(oauth, settings))

    assert where == "https://sync.example.com/oauth/outreach"
    assert query["tenant"] == ["7"] and query["state"] == ["xyz-123"] and query["code"][0]


def test_a_code_buys_an_access_and_a_refresh_token_that_work(oauth, settings):
    code = code_for(oauth, settings)

    answer = grant(oauth, settings, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)

    assert answer.status_code == 200, answer.content
    tokens = answer.json()
    prospects = oauth.get("/mock/outreach/api/v2/prospects", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert prospects.status_code == 200
    assert refresh(oauth, settings, tokens["refresh_token"]).status_code == 200


def test_a_code_is_good_once(oauth, settings):
    code = code_for(oauth, settings)
    grant(oauth, settings, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)

    again = grant(oauth, settings, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)

    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize("case", ["other redirect_uri", "expired", "made up", "other client"])
def test_a_code_is_refused_for_another_redirect_uri_after_ten_minutes_or_when_never_issued(oauth, settings, case):
    code = code_for(oauth, settings)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if case == "other redirect_uri":
        form["redirect_uri"] = "https://evil.example.com/callback"
    elif case == "expired":
        MockToken.objects.filter(token=code).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "made up":
        form["code"] = ("y" if code.startswith("x") else "x") + code[1:]  # one character off, never the same
    elif case == "other client":
        settings.MOCK_OUTREACH_CLIENT_ID = "another-app"

    answer = grant(oauth, settings, **form)

    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    if case == "other redirect_uri":  # not spent by the wrong try: the right one still works
        assert grant(oauth, settings, **{**form, "redirect_uri": REDIRECT}).status_code == 200


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"client_id": "not-our-app"}, "invalid_client"),
        ({"redirect_uri": "javascript:alert(1)"}, "invalid_request"),
        ({"redirect_uri": ""}, "invalid_request"),
    ],
)
def test_an_unknown_client_or_a_bad_redirect_uri_is_answered_never_redirected_to(oauth, settings, query, error):
    answer = authorize(oauth, settings, **query)

    assert (answer.status_code, answer.json()["error"]) == (400, error)
    assert not MockToken.objects.filter(system="outreach-code").exists()


def test_a_response_type_other_than_code_is_redirected_back_as_an_error_with_the_state(oauth, settings):
    where, query = redirected_to(authorize(oauth, settings, response_type="token"))

    assert where == "https://sync.example.com/oauth/outreach"
    assert query["error"] == ["unsupported_response_type"] and query["state"] == ["xyz-123"]
    assert "code" not in query


def test_the_consent_page_asks_first_and_cancel_goes_back_with_access_denied(oauth: Client, settings: Any) -> None:
    asked = {
        "client_id": outreach_mock.app_client_id(),
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "prospects.all",
        "state": "s-9",
    }

    page = oauth.get(AUTHORIZE, asked)
    cancelled = oauth.post(AUTHORIZE, {**asked, "decision": "deny"})

    assert page.status_code == 200 and b'id="allow"' in page.content and b"prospects.all" in page.content
    where, query = redirected_to(cancelled)
    assert where == "https://sync.example.com/oauth/outreach" and query == {
        "tenant": ["7"],
        "error": ["access_denied"],
        "state": ["s-9"],
    }
