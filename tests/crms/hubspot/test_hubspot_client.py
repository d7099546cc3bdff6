"""The mock HubSpot judged by what no one here wrote: hubspot-api-client, HubSpot's official Python client,
generated from HubSpot's OpenAPI specs, drives it unchanged. Its only setting is the base URL (`host`).

The client deserialises only the status codes the spec names (create 201, batch read/update/upsert 200,
207 with errors, archive 204): an answer with another code comes back as None, so these tests also hold
the mock to the spec's codes.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.companies import ApiException as CompaniesApiException
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.contacts.exceptions import NotFoundException, ServiceException, UnauthorizedException

from crms.hubspot import mock as hubspot_mock
from crms.mocks.models import MockRecord
from crms.mocks.runtime import fault_add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def base(live_server: Any) -> str:
    return f"{live_server.url}/mock/hubspot"


@pytest.fixture
def client(base: str) -> HubSpot:
    return HubSpot(access_token=hubspot_mock.private_app_token(), host=base)


def contact(email: str, **more: str) -> dict[str, Any]:
    return {"properties": {"email": email, **more}}


def test_a_contact_is_created_read_updated_and_archived_through_the_basic_api(client: HubSpot) -> None:
    created = client.crm.contacts.basic_api.create(contact("Ada@Example.com", firstname="Ada"))

    assert created.id.isdigit() and created.properties["email"] == "ada@example.com"  # kept in lower case
    assert created.properties["hs_object_id"] == created.id and created.archived is False
    read = client.crm.contacts.basic_api.get_by_id(created.id, properties=["firstname", "lastname"])
    assert read.properties["firstname"] == "Ada" and read.properties["lastname"] is None  # defined, unset: null
    by_email = client.crm.contacts.basic_api.get_by_id("ada@example.com", id_property="email")
    assert by_email.id == created.id
    updated = client.crm.contacts.basic_api.update(created.id, {"properties": {"lastname": "Lovelace"}})
    assert updated.properties["lastname"] == "Lovelace" and updated.updated_at >= created.updated_at
    assert client.crm.contacts.basic_api.archive(created.id) is None  # 204

    with pytest.raises(NotFoundException) as gone:
        client.crm.contacts.basic_api.get_by_id(created.id)
    assert gone.value.status == 404 and '"category":"OBJECT_NOT_FOUND"' in gone.value.body.replace(" ", "")
    archived = client.crm.contacts.basic_api.get_by_id(created.id, archived=True)
    assert archived.archived is True and archived.archived_at is not None


def test_unknown_and_read_only_properties_are_refused_with_a_validation_error(client: HubSpot) -> None:
    with pytest.raises(ContactsApiException) as refused:
        client.crm.contacts.basic_api.create(contact("x@example.com", favourite_colour="blue", createdate="1"))

    assert refused.value.status == 400
    assert "VALIDATION_ERROR" in refused.value.body and "PROPERTY_DOESNT_EXIST" in refused.value.body
    assert "READ_ONLY_VALUE" in refused.value.body
    assert not MockRecord.objects.filter(system="hubspot").exists()


def test_a_second_contact_with_an_email_taken_is_a_conflict(client: HubSpot) -> None:
    first = client.crm.contacts.basic_api.create(contact("dup@example.com"))

    with pytest.raises(ContactsApiException) as refused:
        client.crm.contacts.basic_api.create(contact("DUP@example.com"))

    assert refused.value.status == 409 and f"Existing ID: {first.id}" in refused.value.body


def test_batch_upsert_by_email_creates_then_updates_and_says_which(client: HubSpot) -> None:
    inputs = [{"idProperty": "email", "id": "a@example.com", "properties": {"firstname": "A"}}]

    first = client.crm.contacts.batch_api.upsert({"inputs": inputs})
    again = client.crm.contacts.batch_api.upsert({"inputs": [{**inputs[0], "properties": {"firstname": "A2"}}]})

    assert first.status == "COMPLETE" and [r.new for r in first.results] == [True]
    assert [r.new for r in again.results] == [False] and again.results[0].id == first.results[0].id
    assert again.results[0].properties["firstname"] == "A2"
    assert MockRecord.objects.filter(system="hubspot", object="contacts").count() == 1


def test_a_batch_with_trace_ids_answers_207_with_each_failed_input_and_keeps_the_rest(client: HubSpot) -> None:
    client.crm.contacts.basic_api.create(contact("taken@example.com"))
    inputs = [
        {"properties": {"email": "new@example.com"}, "objectWriteTraceId": "0"},
        {"properties": {"email": "taken@example.com"}, "objectWriteTraceId": "1"},
    ]

    answer = client.crm.contacts.batch_api.create({"inputs": inputs})

    assert answer.num_errors == 1 and [r.properties["email"] for r in answer.results] == ["new@example.com"]
    assert answer.errors[0].category == "CONFLICT" and answer.errors[0].context == {"objectWriteTraceId": ["1"]}


def test_a_batch_without_trace_ids_fails_whole_and_writes_nothing(client: HubSpot) -> None:
    client.crm.contacts.basic_api.create(contact("taken@example.com"))
    inputs = [{"properties": {"email": "new@example.com"}}, {"properties": {"email": "taken@example.com"}}]

    with pytest.raises(ContactsApiException) as refused:
        client.crm.contacts.batch_api.create({"inputs": inputs})

    assert refused.value.status == 409
    assert not MockRecord.objects.filter(system="hubspot", fields__email="new@example.com").exists()


def test_batch_update_read_and_archive_by_id(client: HubSpot) -> None:
    made = client.crm.contacts.batch_api.create({"inputs": [contact(f"u{i}@example.com") for i in range(3)]})
    ids = sorted(r.id for r in made.results)

    updated = client.crm.contacts.batch_api.update(
        {"inputs": [{"id": i, "properties": {"jobtitle": "Engineer"}} for i in ids]}
    )
    read = client.crm.contacts.batch_api.read({"inputs": [{"id": i} for i in ids], "properties": ["jobtitle"]})
    archived = client.crm.contacts.batch_api.archive({"inputs": [{"id": ids[0]}]})
    missing = client.crm.contacts.batch_api.read({"inputs": [{"id": ids[0]}], "properties": ["jobtitle"]})

    assert {r.properties["jobtitle"] for r in updated.results} == {"Engineer"}
    assert sorted(r.id for r in read.results) == ids and archived is None
    assert missing.results == [] and missing.errors[0].category == "OBJECT_NOT_FOUND"


def test_a_batch_update_of_an_unknown_id_names_it_in_its_error(client: HubSpot) -> None:
    inputs = [{"id": "999", "properties": {"firstname": "X"}, "objectWriteTraceId": "7"}]

    answer = client.crm.contacts.batch_api.update({"inputs": inputs})

    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context == {"objectWriteTraceId": ["7"], "ids": ["999"]}


def test_more_than_100_inputs_in_a_batch_are_refused(client: HubSpot) -> None:
    inputs = [{"idProperty": "email", "id": f"n{i}@example.com", "properties": {}} for i in range(101)]

    with pytest.raises(ContactsApiException) as refused:
        client.crm.contacts.batch_api.upsert({"inputs": inputs})

    assert refused.value.status == 400 and "VALIDATION_ERROR" in refused.value.body


def test_search_filters_on_the_last_modified_stamp_sorts_and_pages(client: HubSpot) -> None:
    client.crm.contacts.batch_api.create({"inputs": [contact(f"s{i}@example.com") for i in range(5)]})
    request: dict[str, Any] = {
        "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["email", "lastmodifieddate"],
        "limit": 2,
    }

    first = client.crm.contacts.search_api.do_search(request)
    second = client.crm.contacts.search_api.do_search({**request, "after": first.paging.next.after})
    later = {
        **request,
        "filterGroups": [{"filters": [{**request["filterGroups"][0]["filters"][0], "value": "9" * 13}]}],
    }

    assert first.total == 5 and len(first.results) == 2 and first.paging.next.after == "2"
    stamps = [r.properties["lastmodifieddate"] for r in first.results + second.results]
    assert stamps == sorted(stamps)
    assert client.crm.contacts.search_api.do_search(later).total == 0


def test_search_refuses_a_page_over_200_and_paging_past_10000(client: HubSpot) -> None:
    with pytest.raises(ContactsApiException) as too_big:
        client.crm.contacts.search_api.do_search({"limit": 201})
    with pytest.raises(ContactsApiException) as too_deep:
        client.crm.contacts.search_api.do_search({"limit": 100, "after": "9950"})

    assert too_big.value.status == 400 and too_deep.value.status == 400 and "10000" in too_deep.value.body


def test_companies_upsert_by_their_unique_custom_property_but_not_by_domain(client: HubSpot) -> None:
    by_key = [{"idProperty": "recordsync_id", "id": "acc-1", "properties": {"name": "Acme", "domain": "acme.test"}}]
    by_domain = [{"idProperty": "domain", "id": "acme.test", "properties": {"name": "Acme"}}]

    made = client.crm.companies.batch_api.upsert({"inputs": by_key})
    with pytest.raises(CompaniesApiException) as refused:
        client.crm.companies.batch_api.upsert({"inputs": by_domain})

    assert made.results[0].new is True and made.results[0].properties["recordsync_id"] == "acc-1"
    assert refused.value.status == 400 and "non-unique" in refused.value.body


def test_the_properties_api_says_which_properties_are_unique_and_read_only(client: HubSpot) -> None:
    described = {p.name: p for p in client.crm.properties.core_api.get_all(object_type="contacts").results}

    assert described["email"].has_unique_value is True
    assert described["lastmodifieddate"].modification_metadata.read_only_value is True
    assert described["firstname"].modification_metadata.read_only_value is False


def test_pages_of_contacts_list_by_record_id(client: HubSpot) -> None:
    client.crm.contacts.batch_api.create({"inputs": [contact(f"p{i}@example.com") for i in range(3)]})

    page = client.crm.contacts.basic_api.get_page(limit=2, properties=["email"])
    rest = client.crm.contacts.basic_api.get_page(limit=2, after=page.paging.next.after, properties=["email"])

    assert len(page.results) == 2 and len(rest.results) == 1 and rest.paging is None
    assert len({r.id for r in page.results + rest.results}) == 3


def test_over_the_burst_limit_a_429_names_the_policy_and_answers_carry_the_headers(
    client: HubSpot, base: str, settings: Any
) -> None:
    settings.MOCK_HUBSPOT_BURST_LIMIT = 2
    headers = {"Authorization": f"Bearer {hubspot_mock.private_app_token()}"}
    first = requests.get(f"{base}/crm/v3/objects/contacts", headers=headers, timeout=10)
    client.crm.contacts.basic_api.get_page()

    with pytest.raises(ContactsApiException) as limited:
        client.crm.contacts.basic_api.get_page()

    assert first.headers["X-HubSpot-RateLimit-Max"] == "2" and first.headers["X-HubSpot-RateLimit-Remaining"] == "1"
    assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert limited.value.status == 429 and '"policyName": "TEN_SECONDLY_ROLLING"' in limited.value.body
    searched = requests.post(f"{base}/crm/v3/objects/contacts/search", json={}, headers=headers, timeout=10)
    assert searched.status_code == 200 and not any(h.startswith("X-HubSpot-RateLimit") for h in searched.headers)


def test_the_search_api_has_its_own_per_second_limit(base: str, settings: Any) -> None:
    settings.MOCK_HUBSPOT_SEARCH_PER_SECOND = 2
    headers = {"Authorization": f"Bearer {hubspot_mock.private_app_token()}"}
    codes = [
        requests.post(f"{base}/crm/v3/objects/contacts/search", json={}, headers=headers, timeout=10).status_code
        for _ in range(3)
    ]

    assert codes == [200, 200, 429]


def test_a_wrong_token_is_a_401_and_an_injected_fault_reaches_the_client(client: HubSpot, base: str) -> None:
    with pytest.raises(UnauthorizedException):
        HubSpot(access_token="pat-wrong", host=base).crm.contacts.basic_api.get_page()
    fault_add(system="hubspot", calls=1, seconds=None, status=503, message="down for a moment")

    with pytest.raises(ServiceException) as down:
        client.crm.contacts.basic_api.get_page()

    assert down.value.status == 503 and "down for a moment" in down.value.body
    assert client.crm.contacts.basic_api.get_page().results == []  # the fault was for one call


def _code(base: str, app: dict[str, str], **extra: str) -> str:
    """The consent page's Allow, as a user clicks it: the code from the redirect back to the app."""
    consent = requests.post(
        f"{base}/oauth/authorize",
        data={**app, "scope": "oauth crm.objects.contacts.read", "state": "s1", "decision": "allow", **extra},
        allow_redirects=False,
        timeout=10,
    )
    query = dict(parse_qsl(urlsplit(consent.headers["Location"]).query))
    assert query["state"] == "s1"
    return query["code"]


def test_an_authorization_code_then_a_refresh_through_the_clients_oauth_api(base: str) -> None:
    app = {"client_id": hubspot_mock.app_client_id(), "redirect_uri": "http://127.0.0.1:1/callback"}
    oauth = HubSpot(host=base).oauth
    secret = hubspot_mock.app_client_secret()

    tokens = oauth.tokens_api.create(
        grant_type="authorization_code", code=_code(base, app), client_secret=secret, **app
    )
    refreshed = oauth.tokens_api.create(
        grant_type="refresh_token", refresh_token=tokens.refresh_token, client_id=app["client_id"], client_secret=secret
    )
    info = oauth.access_tokens_api.get(refreshed.access_token)

    assert tokens.expires_in == 1800 and refreshed.refresh_token == tokens.refresh_token  # not rotated
    assert info.hub_id == hubspot_mock.HUB_ID and "crm.objects.contacts.write" in info.scopes
    assert HubSpot(access_token=refreshed.access_token, host=base).crm.contacts.basic_api.get_page().results == []


def test_a_code_asked_with_pkce_is_spent_only_with_its_verifier(base: str) -> None:
    """hubspot-api-client 12 sends no code_verifier; HubSpot's OpenAPI spec for the token endpoint takes one."""
    app = {"client_id": hubspot_mock.app_client_id(), "redirect_uri": "http://127.0.0.1:1/callback"}
    verifier = "v" * 64
    code = _code(base, app, code_challenge=_s256(verifier), code_challenge_method="S256")
    form = {**app, "client_secret": hubspot_mock.app_client_secret(), "grant_type": "authorization_code", "code": code}

    wrong = requests.post(f"{base}/oauth/v1/token", data={**form, "code_verifier": "x" * 64}, timeout=10)
    right = requests.post(f"{base}/oauth/v1/token", data={**form, "code_verifier": verifier}, timeout=10)
    again = requests.post(f"{base}/oauth/v1/token", data={**form, "code_verifier": verifier}, timeout=10)

    assert wrong.status_code == 400 and right.status_code == 200 and again.status_code == 400  # good once


def test_a_denied_consent_goes_back_with_access_denied_and_no_code(base: str) -> None:
    app = {"client_id": hubspot_mock.app_client_id(), "redirect_uri": "http://127.0.0.1:1/callback"}

    page = requests.get(f"{base}/oauth/authorize", params={**app, "scope": "oauth", "state": "s2"}, timeout=10)
    denied = requests.post(
        f"{base}/oauth/authorize", data={**app, "state": "s2", "decision": "deny"}, allow_redirects=False, timeout=10
    )

    assert page.status_code == 200 and 'id="allow"' in page.text and "oauth" in page.text
    assert dict(parse_qsl(urlsplit(denied.headers["Location"]).query)) == {"error": "access_denied", "state": "s2"}


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_companies_are_created_read_and_searched_through_their_own_apis(client: HubSpot) -> None:
    made = client.crm.companies.basic_api.create({"properties": {"name": "Acme", "recordsync_id": "acc-7"}})
    found = client.crm.companies.search_api.do_search(
        {"filterGroups": [{"filters": [{"propertyName": "recordsync_id", "operator": "EQ", "value": "acc-7"}]}]}
    )
    by_key = client.crm.companies.basic_api.get_by_id("acc-7", id_property="recordsync_id", properties=["name"])

    assert made.properties["hs_lastmodifieddate"] and found.total == 1 and found.results[0].id == made.id
    assert by_key.id == made.id and by_key.properties["name"] == "Acme"
