"""The Outreach connector against Outreach's own reference (every body we send) and real records (the answers)."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.conf import settings
from django.db import connection as db_connection
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest

from crms.base import Change, ConnectorError, OutboundRecord
from crms.http import HttpClient
from crms.models import Connection
from crms.outreach.connector import OutreachConnector
from crms.outreach.errors import parse_rate_limit
from crms.state import DatabaseStateStore
from sync.delivery.outcomes import backoff_seconds

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures"
API = "https://api.outreach.io/api/v2"
TOKEN_URL = "https://api.outreach.io/oauth/token"
JSONAPI = "application/vnd.api+json"
T0 = 1_700_000_000.0
REFERENCE = json.loads((FIXTURES / "outreach.oas.subset.json").read_text())
SPEC = OpenAPI.from_dict(REFERENCE)
AIRBYTE = {
    row["stream"]: row["data"]
    for row in map(
        json.loads, (FIXTURES / "airbyte_expected_records.prospects_accounts.jsonl").read_text().splitlines()
    )
}
EMAIL_TAKEN = {  # the wording public connectors match on; see fixtures/SOURCE.md
    "errors": [
        {
            "id": "validationError",
            "source": {"pointer": "/data"},
            "title": "Validation Error",
            "detail": "Contacts email hash has already been taken.",
        }
    ]
}


def json5_block(text: str) -> Any:
    """The docs write their examples in JSON5 (bare keys, trailing commas): enough of it to read them."""
    block = re.search(r"```json5\n(.*?)```", text, re.S)
    assert block is not None
    quoted = re.sub(r"(\w+):\s", r'"\1": ', block.group(1))
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", quoted))


UNSUPPORTED_MEDIA_TYPE = json5_block((FIXTURES / "docs_making_requests_excerpt.md").read_text())


# --- answers built from the Airbyte records -------------------------------------------------------


def _related_type(schema: Any) -> str | None:
    """The `type` a relationship's data carries, from the reference's (nested) relationship schema."""
    if isinstance(schema, dict):
        enum = schema.get("properties", {}).get("data", {}).get("properties", {}).get("type", {}).get("enum")
        if enum:
            return str(enum[0])
        schema = list(schema.values())
    if isinstance(schema, list):
        return next((found for item in schema if (found := _related_type(item))), None)
    return None


def resource(kind: str, id: int | None = None, **attributes: Any) -> dict[str, Any]:
    """An Airbyte record (flattened by Airbyte) turned back into the JSON:API resource Outreach sends."""
    flat = dict(AIRBYTE[f"{kind}s"])
    declared = REFERENCE["components"]["schemas"][f"{kind}Relationships"]["properties"]
    relationships: dict[str, Any] = {}
    for name in [key for key in flat if key in declared]:
        value, target = flat.pop(name), _related_type(declared[name])
        ids = value if isinstance(value, list) else [value]
        data = [{"type": target, "id": i} for i in ids]
        relationships[name] = {"data": data if isinstance(value, list) else data[0]}
    resource_id = id if id is not None else flat.pop("id")
    flat.pop("id", None)
    return {
        "type": kind,
        "id": resource_id,
        "attributes": flat | attributes,
        "relationships": relationships,
        "links": {"self": f"{API}/{kind}s/{resource_id}"},
    }


def outreach_change(attributes: dict[str, Any]) -> Change:
    return Change("prospect", "1", attributes, datetime(2024, 3, 3, tzinfo=UTC))


def page(*rows: dict[str, Any], next_link: str | None = None) -> dict[str, Any]:
    return {"data": list(rows), "links": {"next": next_link} if next_link else {}}


def not_found(kind: str, id: int) -> dict[str, Any]:
    return {
        "errors": [
            {
                "id": "resourceNotFound",
                "title": "Resource Not Found",
                "detail": f"Could not find '{kind}' with ID '{id}'.",
            }
        ]
    }


# --- the connector and a fake Outreach ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def grant(clock: Clock, delay: float = 0.0) -> Callable[[Any], tuple[int, dict[str, str], str]]:
    """Outreach's token endpoint: a new access token and a new (rotated) refresh token each time."""
    issued = itertools.count(1)

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        time.sleep(delay)
        n = next(issued)
        return (
            200,
            {},
            json.dumps(
                {
                    "access_token": f"access-{n}",
                    "token_type": "bearer",
                    "expires_in": 7200,
                    "refresh_token": f"refresh-{n}",
                    "scope": "prospects.all accounts.all",
                    "created_at": int(clock()),
                }
            ),
        )

    return answer


def make_connector(connection: Connection, clock: Clock, **config: Any) -> OutreachConnector:
    connector = OutreachConnector(
        config={"client_id": "app-id", "redirect_uri": "https://sync.example.com/oauth/outreach", **config},
        secrets={"client_secret": "app-secret", "refresh_token": "initial-refresh"},
        http=HttpClient(connection_name=connection.name),
        store=DatabaseStateStore(connection),
    )
    connector.clock = clock
    return connector


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def connection() -> Connection:
    return Connection.objects.create(name="outreach", kind="outreach")


@pytest.fixture
def connector(connection: Connection, clock: Clock) -> OutreachConnector:
    return make_connector(connection, clock)


def check_sent(calls: Any) -> None:
    """Every API call speaks JSON:API, and every body we send is valid for the reference's request schema."""
    for call in calls:
        request = call.request
        if not request.url.startswith(API):
            continue
        assert (request.headers["Content-Type"], request.headers["Accept"]) == (JSONAPI, JSONAPI)
        if request.method in ("POST", "PATCH"):
            SPEC.validate_request(RequestsOpenAPIRequest(request))


@pytest.fixture
def outreach(clock: Clock) -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, TOKEN_URL, callback=grant(clock))
        yield mock
        check_sent(mock.calls)


def api_calls(mock: responses.RequestsMock) -> list[Any]:
    return [c for c in mock.calls if str(c.request.url).startswith(API)]


def grants(mock: responses.RequestsMock) -> list[dict[str, list[str]]]:
    return [parse_qs(str(c.request.body)) for c in mock.calls if c.request.url == TOKEN_URL]


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def sent(call: Any) -> Any:
    return json.loads(call.request.body)


def upsert(record_id: str = "c-1", external_id: str | None = None, **fields: Any) -> OutboundRecord:
    fields = fields or {"emails": ["ada@example.com"], "firstName": "Ada"}
    return OutboundRecord(record_id, "prospect", "upsert", fields, external_id)


# --- OAuth ----------------------------------------------------------------------------------------


def test_the_first_call_refreshes_with_the_secret_token_and_stores_the_rotated_one(connector, outreach):
    outreach.get(f"{API}/prospects", json=page(resource("prospect")))

    assert connector.read("prospect", ["1"])["1"]["emails"] == ["<redacted>@zazmic.com"]

    assert grants(outreach) == [
        {
            "client_id": ["app-id"],
            "client_secret": ["app-secret"],
            "redirect_uri": ["https://sync.example.com/oauth/outreach"],
            "grant_type": ["refresh_token"],
            "refresh_token": ["initial-refresh"],
        }
    ]
    assert api_calls(outreach)[0].request.headers["Authorization"] == "Bearer access-1"
    stored = connector.store.get("oauth")
    assert (stored["access_token"], stored["refresh_token"], stored["expires_at"]) == (
        "access-1",
        "refresh-1",
        T0 + 7200,
    )


def test_the_token_is_refreshed_shortly_before_it_expires(connector, outreach, clock):
    outreach.get(f"{API}/prospects", json=page())
    connector.read("prospect", ["1"])

    clock.now = T0 + 7200 - 301  # more than the five-minute margin left: keep it
    connector.read("prospect", ["1"])
    assert len(grants(outreach)) == 1

    clock.now = T0 + 7200 - 299  # inside the margin: refresh before Outreach refuses it
    connector.read("prospect", ["1"])

    assert [g["refresh_token"] for g in grants(outreach)] == [["initial-refresh"], ["refresh-1"]]
    assert api_calls(outreach)[-1].request.headers["Authorization"] == "Bearer access-2"
    assert connector.store.get("oauth")["refresh_token"] == "refresh-2"


def test_a_401_refreshes_once_and_retries(connector, outreach):
    outreach.get(f"{API}/prospects", status=401, json={"errors": [{"id": "unauthorized", "title": "Unauthorized"}]})
    outreach.get(f"{API}/prospects", json=page(resource("prospect")))

    assert list(connector.read("prospect", ["1"])) == ["1"]

    assert [c.request.headers["Authorization"] for c in api_calls(outreach)] == ["Bearer access-1", "Bearer access-2"]
    assert len(grants(outreach)) == 2


def test_a_token_refused_after_a_refresh_is_permanent_and_pauses_the_connection(connector, outreach):
    outreach.get(
        f"{API}/prospects",
        status=401,
        json={"errors": [{"id": "unauthorized", "title": "Unauthorized", "detail": "The access token was revoked."}]},
    )

    with pytest.raises(ConnectorError) as raised:
        connector.read("prospect", ["1"])

    error = raised.value
    assert (error.code, error.permanent, error.pause_connection, error.http_status) == ("unauthorized", True, True, 401)
    assert "The access token was revoked." in error.message
    assert len(api_calls(outreach)) == 2


def test_a_refused_refresh_is_permanent_and_says_why(connector, outreach):
    refusal = {"error": "invalid_grant", "error_description": "The provided authorization grant is invalid or revoked."}
    outreach.replace(responses.POST, TOKEN_URL, status=400, json=refusal)

    with pytest.raises(ConnectorError) as raised:
        connector.read("prospect", ["1"])

    assert (raised.value.code, raised.value.permanent, raised.value.pause_connection) == ("invalid_grant", True, True)
    assert "authorization grant is invalid" in raised.value.message
    assert api_calls(outreach) == []


def test_a_new_refresh_token_pasted_into_secrets_restarts_the_chain(connector, outreach, connection, clock):
    outreach.get(f"{API}/prospects", json=page())
    connector.read("prospect", ["1"])  # the stored chain now holds refresh-1

    reauthorised = make_connector(connection, clock)
    reauthorised.secrets = {**reauthorised.secrets, "refresh_token": "pasted-after-reauthorising"}
    reauthorised.read("prospect", ["1"])

    assert [g["refresh_token"] for g in grants(outreach)] == [["initial-refresh"], ["pasted-after-reauthorising"]]


@pytest.mark.django_db(transaction=True)
def test_two_workers_needing_a_token_at_once_refresh_it_once(clock):
    connection = Connection.objects.create(name="outreach", kind="outreach")
    workers = [make_connector(connection, clock) for _ in range(2)]
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def work(worker: OutreachConnector) -> None:
        try:
            start.wait()
            worker.read("prospect", ["1"])
        except BaseException as exc:
            failures.append(exc)
        finally:
            db_connection.close()

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        # A slow grant: the second worker reaches the lock while the first is refreshing.
        mock.add_callback(responses.POST, TOKEN_URL, callback=grant(clock, delay=0.3))
        mock.get(f"{API}/prospects", json=page())
        threads = [threading.Thread(target=work, args=(worker,)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        granted, bearers = grants(mock), [c.request.headers["Authorization"] for c in api_calls(mock)]

    assert failures == []
    assert len(granted) == 1
    assert bearers == ["Bearer access-1"] * 2
    assert DatabaseStateStore(connection).get("oauth")["refresh_token"] == "refresh-1"


# --- writes ---------------------------------------------------------------------------------------


def test_a_prospect_found_by_email_is_patched(connector, outreach):
    outreach.get(f"{API}/prospects", json=page(resource("prospect", id=42)))
    outreach.patch(f"{API}/prospects/42", json={"data": resource("prospect", id=42, firstName="Ada")})

    (result,) = connector.push([upsert()])

    assert (result.outcome, result.external_id, result.error) == ("updated", "42", None)
    lookup, patch = api_calls(outreach)
    assert query(lookup) == {"filter[emails]": ["ada@example.com"], "page[size]": ["2"], "count": ["false"]}
    assert sent(patch) == {
        "data": {"type": "prospect", "id": 42, "attributes": {"emails": ["ada@example.com"], "firstName": "Ada"}}
    }


def test_a_prospect_no_one_has_is_created_with_its_email_as_a_list(connector, outreach):
    outreach.get(f"{API}/prospects", json=page())
    outreach.post(f"{API}/prospects", status=201, json={"data": resource("prospect", id=43)})

    (result,) = connector.push([upsert(emails="ada@example.com", lastName="Lovelace")])

    assert (result.outcome, result.external_id) == ("created", "43")
    _, post = api_calls(outreach)
    assert sent(post) == {
        "data": {"type": "prospect", "attributes": {"emails": ["ada@example.com"], "lastName": "Lovelace"}}
    }


def test_a_linked_prospect_is_patched_without_a_lookup(connector, outreach):
    outreach.patch(f"{API}/prospects/42", json={"data": resource("prospect", id=42)})

    (result,) = connector.push([upsert(external_id="42")])

    assert (result.outcome, result.external_id) == ("updated", "42")
    assert [c.request.method for c in api_calls(outreach)] == ["PATCH"]


def test_a_link_to_a_prospect_deleted_in_outreach_falls_back_to_matching(connector, outreach):
    outreach.patch(f"{API}/prospects/42", status=404, json=not_found("prospect", 42))
    outreach.get(f"{API}/prospects", json=page())
    outreach.post(f"{API}/prospects", status=201, json={"data": resource("prospect", id=77)})

    (result,) = connector.push([upsert(external_id="42")])

    assert (result.outcome, result.external_id) == ("created", "77")


def test_a_create_that_races_another_writer_looks_again_and_patches(connector, outreach):
    outreach.get(f"{API}/prospects", json=page())
    outreach.post(f"{API}/prospects", status=422, json=EMAIL_TAKEN)
    outreach.get(f"{API}/prospects", json=page(resource("prospect", id=44)))
    outreach.patch(f"{API}/prospects/44", json={"data": resource("prospect", id=44)})

    (result,) = connector.push([upsert()])

    assert (result.outcome, result.external_id) == ("updated", "44")
    assert [c.request.method for c in api_calls(outreach)] == ["GET", "POST", "GET", "PATCH"]


@pytest.mark.parametrize(
    ("record", "code", "fields"),
    [
        (upsert(emails=[], firstName="Ada"), "MISSING_MATCH_KEY", ("emails",)),
        (OutboundRecord("acct-1", "account", "upsert", {"name": "Airbyte"}), "MISSING_MATCH_KEY", ("domain",)),
        (OutboundRecord("d-1", "deal", "upsert", {"name": "Big deal"}), "UNKNOWN_OBJECT", ()),
        (upsert(external_id="003A000001"), "BAD_LINK", ()),
    ],
)
def test_records_that_cannot_be_matched_are_refused_before_any_call(connector, outreach, record, code, fields):
    (result,) = connector.push([record])

    assert result.outcome == "error" and result.error is not None
    assert (result.error.code, result.error.permanent, result.error.fields) == (code, True, fields)
    assert len(outreach.calls) == 0


def test_accounts_are_matched_on_domain(connector, outreach):
    outreach.get(f"{API}/accounts", json=page(resource("account")))
    outreach.patch(f"{API}/accounts/1", json={"data": resource("account")})

    (result,) = connector.push(
        [OutboundRecord("acct-1", "account", "upsert", {"domain": "airbyte.io", "name": "Airbyte"})]
    )

    assert (result.outcome, result.external_id) == ("updated", "1")
    assert query(api_calls(outreach)[0])["filter[domain]"] == ["airbyte.io"]


def test_accounts_keyed_on_a_custom_field_carry_the_source_id(connection, clock, outreach):
    connector = make_connector(connection, clock, objects={"company": {"resource": "account", "match_key": "custom7"}})
    outreach.get(f"{API}/accounts", json=page())
    outreach.post(f"{API}/accounts", status=201, json={"data": resource("account", id=5)})

    (result,) = connector.push([OutboundRecord("acme-9", "company", "upsert", {"name": "Acme"})])

    assert (result.outcome, result.external_id) == ("created", "5")
    lookup, post = api_calls(outreach)
    assert query(lookup)["filter[custom7]"] == ["acme-9"]
    assert sent(post)["data"]["attributes"] == {"name": "Acme", "custom7": "acme-9"}


def test_a_match_key_shared_by_several_records_writes_nothing(connector, outreach):
    outreach.get(f"{API}/accounts", json=page(resource("account", id=1), resource("account", id=2)))

    (result,) = connector.push([OutboundRecord("acct-1", "account", "upsert", {"domain": "airbyte.io"})])

    assert result.error is not None and (result.error.code, result.error.permanent) == ("MULTIPLE_MATCHES", True)
    assert "ids 1, 2" in result.error.message
    assert [c.request.method for c in api_calls(outreach)] == ["GET"]


def test_deletes_use_the_link_and_count_a_missing_record_as_deleted(connector, outreach):
    outreach.delete(f"{API}/prospects/42", status=204)
    outreach.delete(f"{API}/prospects/43", status=404, json=not_found("prospect", 43))

    results = connector.push(
        [
            OutboundRecord("c-1", "prospect", "delete", external_id="42"),
            OutboundRecord("c-2", "prospect", "delete"),
            OutboundRecord("c-3", "prospect", "delete", external_id="43"),
        ]
    )

    assert [(r.outcome, r.external_id) for r in results] == [("deleted", "42"), ("unchanged", None), ("deleted", "43")]
    assert [c.request.url for c in api_calls(outreach)] == [f"{API}/prospects/42", f"{API}/prospects/43"]


def test_a_422_names_the_field_from_its_source_pointer_and_the_batch_goes_on(connector, outreach):
    outreach.patch(
        f"{API}/prospects/42",
        status=422,
        json={
            "errors": [
                {
                    "id": "validationError",
                    "title": "Validation Error",
                    "detail": "Emails is invalid.",
                    "source": {"pointer": "/data/attributes/emails/0"},
                }
            ]
        },
    )
    outreach.patch(f"{API}/prospects/43", json={"data": resource("prospect", id=43)})

    results = connector.push([upsert("c-1", "42"), upsert("c-2", "43")])

    error = results[0].error
    assert error is not None
    assert (error.code, error.permanent, error.fields, error.http_status) == ("validationError", True, ("emails",), 422)
    assert error.message == "Validation Error: Emails is invalid."
    assert results[1].outcome == "updated"


# --- call-level errors and rate limits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"X-RateLimit-Limit": "10000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(T0) + 1800)}, 1800),
        ({"X-RateLimit-Reset": str(int(T0) + 1800), "Retry-After": "60"}, 60),
    ],
)
def test_a_429_waits_until_the_reset_and_the_rest_of_the_batch_is_not_sent(connector, outreach, headers, retry_after):
    outreach.patch(
        f"{API}/prospects/42",
        status=429,
        headers=headers,
        json={"errors": [{"id": "rateLimitExceeded", "title": "Rate Limit Exceeded", "detail": "Too many requests."}]},
    )

    first, second = connector.push([upsert("c-1", "42"), upsert("c-2", "43")])

    assert first.error is not None and second.error is not None
    assert (first.error.code, first.error.permanent, first.error.retry_after) == ("RATE_LIMITED", False, retry_after)
    assert first.error.pause_connection
    assert (second.error.code, second.error.permanent, second.error.retry_after) == ("RATE_LIMITED", False, retry_after)
    assert second.error.message.startswith("not sent:")
    assert len(api_calls(outreach)) == 1
    assert connector.rate_limit["reset"] == int(T0) + 1800


def test_the_rate_limit_headers_are_read_on_every_answer_taking_the_smaller_remaining(connector, outreach):
    limits = {"X-RateLimit-Limit": "10000", "X-RateLimit-Remaining": "9999, 19988", "X-RateLimit-Reset": "1700003600"}
    outreach.get(f"{API}/prospects", json=page(), headers=limits)

    connector.read("prospect", ["1"])

    assert connector.rate_limit == {"limit": 10000, "remaining": 9999, "reset": 1700003600}


@pytest.mark.parametrize(
    ("headers", "parsed"),
    [
        ({"X-RateLimit-Remaining": "9999, 19988"}, {"remaining": 9999}),
        ({"X-RateLimit-Remaining": "19988,9999", "X-RateLimit-Limit": "10000"}, {"remaining": 9999, "limit": 10000}),
        ({"X-RateLimit-Remaining": "unknown"}, {}),
        ({}, {}),
    ],
)
def test_rate_limit_headers_parse(headers, parsed):
    assert parse_rate_limit(headers) == parsed


def test_a_wrong_content_type_answer_is_permanent_with_outreachs_reason(connector, outreach):
    outreach.patch(f"{API}/prospects/42", status=415, json=UNSUPPORTED_MEDIA_TYPE)

    first, second = connector.push([upsert("c-1", "42"), upsert("c-2", "43")])

    assert first.error is not None and second.error is not None
    assert (first.error.code, first.error.permanent) == ("unsupportedMediaType", True)
    assert "Expected Content-Type header to be 'application/vnd.api+json'." in first.error.message
    assert second.error.message.startswith("not sent:") and not second.error.permanent


def test_a_timeout_fails_its_record_and_leaves_the_rest_of_the_batch_unsent(connector, outreach):
    outreach.patch(f"{API}/prospects/42", body=requests.Timeout("read timed out"))

    first, second = connector.push([upsert("c-1", "42"), upsert("c-2", "43")])

    assert first.error is not None and second.error is not None
    assert (first.error.code, first.error.permanent) == ("timeout", False)
    assert (second.error.code, second.error.permanent) == ("timeout", False)
    assert len(api_calls(outreach)) == 1


@pytest.mark.parametrize("answer", [{"status": 500}, {"status": 503}, {"body": requests.Timeout("read timed out")}])
def test_server_errors_and_timeouts_are_retryable(connector, outreach, answer):
    outreach.get(f"{API}/prospects", **answer)

    with pytest.raises(ConnectorError) as raised:
        connector.read("prospect", ["1"])

    assert raised.value.permanent is False
    assert raised.value.pause_connection is False


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_a_server_error_without_retry_after_leaves_the_wait_to_the_engines_backoff_not_the_hourly_reset(
    connector, outreach, status
):
    """One 503 moved jobs about 50 minutes out when this fell back to X-RateLimit-Reset (issue 13)."""
    limits = {"X-RateLimit-Limit": "10000", "X-RateLimit-Remaining": "9000", "X-RateLimit-Reset": str(int(T0) + 3000)}
    outreach.patch(f"{API}/prospects/42", status=status, headers=limits)

    (result,) = connector.push([upsert("c-1", "42")])

    assert result.error is not None
    assert (result.error.http_status, result.error.permanent, result.error.retry_after) == (status, False, None)
    wait = backoff_seconds(1, result.error.retry_after)
    assert wait <= settings.SYNC_BACKOFF_BASE_SECONDS * 2


@pytest.mark.parametrize(("retry_after", "seconds"), [("30", 30.0), ("Sun, 03 Mar 2024 10:02:00 GMT", 120.0)])
def test_a_server_error_with_retry_after_waits_as_long_as_it_asks(connector, outreach, clock, retry_after, seconds):
    clock.now = datetime(2024, 3, 3, 10, 0, tzinfo=UTC).timestamp()
    outreach.patch(f"{API}/prospects/42", status=503, headers={"Retry-After": retry_after})

    (result,) = connector.push([upsert("c-1", "42")])

    assert result.error is not None and result.error.retry_after == seconds


# --- reading changes ------------------------------------------------------------------------------


def stamped(id: int, updated_at: str) -> dict[str, Any]:
    return resource("prospect", id=id, updatedAt=updated_at)


def test_a_links_next_to_another_host_is_not_followed_with_the_token(connector, outreach, clock):
    """Issue 15: the bearer token went to whatever host links.next named."""
    clock.now = T0 + 200 * 86400
    outreach.get(
        f"{API}/prospects",
        json=page(stamped(1, "2024-03-01T10:00:00.000Z"), next_link="https://collector.example.net/steal?page=2"),
    )

    with pytest.raises(ConnectorError) as refused:
        connector.changes("prospect", None)

    assert refused.value.code == "FOREIGN_LINK" and "collector.example.net" in refused.value.message
    assert len(api_calls(outreach)) == 1  # nothing sent to the other host


def test_changes_follow_links_next_and_resume_from_the_newest_row_not_the_last(connector, outreach, clock):
    clock.now = T0 + 200 * 86400  # 2024-06-01: every row below is settled (stamp_cursor.SETTLE_SECONDS)
    next_link = (
        f"{API}/prospects?count=false&filter%5BupdatedAt%5D=1970-01-01T00%3A00%3A00.000Z..inf"
        "&page%5Bafter%5D=eyJpZCI6MX0&page%5Bsize%5D=1000&sort=updatedAt"
    )
    unsorted = [stamped(3, "2024-03-03T10:00:00.000Z"), stamped(1, "2024-03-01T10:00:00.000Z")]
    outreach.get(f"{API}/prospects", json=page(*unsorted, next_link=next_link))
    outreach.get(f"{API}/prospects", json=page(stamped(2, "2024-03-02T10:00:00.000Z")))
    # The next pass: the filter is inclusive, so row 3 comes back with a new row 4.
    outreach.get(
        f"{API}/prospects", json=page(stamped(3, "2024-03-03T10:00:00.000Z"), stamped(4, "2024-03-04T10:00:00.000Z"))
    )

    first = connector.changes("prospect", None)
    second = connector.changes("prospect", first.cursor)
    third = connector.changes("prospect", second.cursor)

    assert [c.external_id for c in first.changes] == ["3", "1"] and first.has_more
    assert [c.external_id for c in second.changes] == ["2"] and not second.has_more
    assert [c.external_id for c in third.changes] == ["4"]
    assert first.changes[0].modified_at.isoformat() == "2024-03-03T10:00:00+00:00"
    assert first.changes[0].fields["emails"] == ["<redacted>@zazmic.com"]
    assert first.changes[0].fields["custom1"] == "custom 1"
    calls = api_calls(outreach)
    assert query(calls[0]) == {
        "filter[updatedAt]": ["1970-01-01T00:00:00.000Z..inf"],
        "sort": ["updatedAt"],
        "page[size]": ["1000"],
        "count": ["false"],
    }
    assert calls[1].request.url == next_link
    assert query(calls[2])["filter[updatedAt]"] == ["2024-03-03T10:00:00.000Z..inf"]  # the max, not the last row's
    assert json.loads(third.cursor or "{}")["since"] == "2024-03-04T10:00:00.000Z"


def test_rows_newer_than_outreachs_clock_minus_a_minute_are_read_again_and_only_changes_come_back(connector, outreach):
    """Outreach's clock (its Date header) says 10:00:30: rows stamped 10:00:00 are not settled yet."""
    clock_header = {"Date": "Sun, 03 Mar 2024 10:00:30 GMT"}
    row, edited = (
        stamped(3, "2024-03-03T10:00:00.000Z"),
        resource("prospect", id=3, updatedAt="2024-03-03T10:00:00.000Z", title="new"),
    )
    outreach.get(f"{API}/prospects", json=page(row), headers=clock_header)
    outreach.get(f"{API}/prospects", json=page(row, stamped(4, "2024-03-03T10:00:00.000Z")), headers=clock_header)
    outreach.get(f"{API}/prospects", json=page(edited), headers=clock_header)

    first = connector.changes("prospect", None)
    second = connector.changes("prospect", first.cursor)
    third = connector.changes("prospect", second.cursor)

    assert [c.external_id for c in first.changes + second.changes + third.changes] == ["3", "4", "3"]
    assert third.changes[0].fields["title"] == "new"  # the same second, other content: a change
    assert query(api_calls(outreach)[1])["filter[updatedAt]"] == ["2024-03-03T09:59:30.000Z..inf"]


def test_a_502_on_a_large_page_is_asked_again_at_half_the_size(connector, outreach):
    next_link = f"{API}/prospects?count=false&page%5Bafter%5D=abc&page%5Bsize%5D=500&sort=updatedAt"
    outreach.get(f"{API}/prospects", status=502)
    outreach.get(f"{API}/prospects", json=page(stamped(1, "2024-03-01T10:00:00.000Z"), next_link=next_link))
    outreach.get(f"{API}/prospects", status=502)
    outreach.get(f"{API}/prospects", json=page(stamped(2, "2024-03-02T10:00:00.000Z")))

    first = connector.changes("prospect", None)
    second = connector.changes("prospect", first.cursor)

    sizes = [query(c)["page[size]"] for c in api_calls(outreach)]
    assert sizes == [["1000"], ["500"], ["500"], ["250"]]
    assert query(api_calls(outreach)[3])["page[after]"] == ["abc"]
    assert [c.external_id for c in first.changes + second.changes] == ["1", "2"]
    assert json.loads(second.cursor or "{}")["size"] == 250  # later passes keep the size that worked


def test_a_502_at_the_smallest_page_is_a_retryable_error(connector, outreach):
    outreach.get(f"{API}/prospects", status=502)

    with pytest.raises(ConnectorError) as raised:
        connector.changes("prospect", json.dumps({"since": "2024-03-01T00:00:00.000Z", "size": 50}))

    assert (raised.value.http_status, raised.value.permanent) == (502, False)
    assert len(api_calls(outreach)) == 1


def test_read_asks_for_ids_a_hundred_at_a_time(connector, outreach):
    outreach.get(f"{API}/prospects", json=page(resource("prospect", id=1)))
    outreach.get(f"{API}/prospects", json=page(resource("prospect", id=150)))

    found = connector.read("prospect", [str(i) for i in range(1, 151)])

    assert sorted(found) == ["1", "150"]
    assert found["150"]["firstName"] == "<redacted>"
    asked = [query(c)["filter[id]"][0].split(",") for c in api_calls(outreach)]
    assert [len(ids) for ids in asked] == [100, 50] and asked[1][-1] == "150"


# --- check, config and capabilities ---------------------------------------------------------------


def test_check_reports_the_rate_limit(connector, outreach):
    outreach.get(
        API,
        json={},
        headers={
            "X-RateLimit-Limit": "10000",
            "X-RateLimit-Remaining": "9998, 19990",
            "X-RateLimit-Reset": "1700003600",
        },
    )

    result = connector.check()

    assert result.ok and result.message == "connected; 9998 of 10000 calls left"
    assert result.details == {"rate_limit": {"limit": 10000, "remaining": 9998, "reset": 1700003600}}


def test_check_fails_when_outreach_will_not_filter_on_the_custom_match_key(connection, clock, outreach):
    connector = make_connector(connection, clock, objects={"company": {"resource": "account", "match_key": "custom7"}})
    outreach.get(API, json={})
    outreach.get(
        f"{API}/accounts",
        status=400,
        json={
            "errors": [{"id": "badFilter", "title": "Bad Filter", "detail": "custom7 is not a filterable attribute."}]
        },
    )

    result = connector.check()

    assert not result.ok
    assert result.message.startswith("MATCH_KEY_NOT_FILTERABLE: objects.company")


def test_check_names_each_configured_field_outreach_lacks_keeps_read_only_or_types_otherwise(
    connection, clock, outreach
):
    contact = {
        "emails": "array",
        "firstName": "string",
        "FirstName": "string",
        "clickCount": "integer",
        "dateOfBirth": "date",
    }
    company = {"numberOfEmployees": "string", "foundedAt": "date-time", "named": "boolean"}
    objects = {
        "contact": {"resource": "prospect", "fields": contact},
        "company": {"resource": "account", "match_key": "domain", "fields": company},
    }
    connector = make_connector(connection, clock, objects=objects)
    outreach.get(API, json={})

    result = connector.check()

    assert not result.ok
    assert result.details["fields"] == {
        "objects.contact.fields.FirstName": "objects.contact.fields.FirstName: Outreach prospects have no attribute "
        "'FirstName' (did you mean firstName?)",
        "objects.contact.fields.clickCount": "objects.contact.fields.clickCount: clickCount is read-only in Outreach "
        "(Outreach sets it)",
        "objects.company.fields.numberOfEmployees": "objects.company.fields.numberOfEmployees: Outreach's "
        "numberOfEmployees is an integer, not a string",
    }
    assert result.message == "; ".join(result.details["fields"].values())


def test_check_passes_when_every_configured_field_matches_the_reference(connection, clock, outreach):
    objects = {"contact": {"resource": "prospect", "fields": {"emails": "array", "score": "number", "tags": "array"}}}
    connector = make_connector(connection, clock, objects=objects)
    outreach.get(API, json={})

    assert connector.check().ok
    assert Draft202012Validator(OutreachConnector.config_schema).is_valid({"client_id": "app", "objects": objects})
    assert not Draft202012Validator(OutreachConnector.config_schema).is_valid(
        {"client_id": "app", "objects": {"contact": {"resource": "prospect", "fields": {"emails": "list"}}}}
    )


def test_check_reports_the_field_problems_with_a_connection_failure_too(connection, clock, outreach):
    objects = {"contact": {"resource": "prospect", "fields": {"shoeSize": "integer"}}}
    connector = make_connector(connection, clock, objects=objects)
    outreach.get(API, status=503)

    result = connector.check()

    assert not result.ok and result.message.startswith("HTTP_503") and "no attribute 'shoeSize'" in result.message


def test_read_only_attributes_are_outreachs_own_and_never_reach_the_pipeline(connector):
    change = outreach_change(resource("prospect", id=1)["attributes"])

    fields = connector.inbound(change).fields

    assert {"createdAt", "updatedAt", "name", "clickCount", "engagedScore", "touchedAt"}.isdisjoint(fields)
    assert fields["emails"] == ["<redacted>@zazmic.com"] and fields["custom1"] == "custom 1"


def test_the_config_schema_takes_the_documented_match_keys_only():
    validator = Draft202012Validator(OutreachConnector.config_schema)
    Draft202012Validator.check_schema(OutreachConnector.config_schema)

    def ok(config: dict[str, Any]) -> bool:
        return validator.is_valid({"client_id": "app-id", **config})

    assert ok({}) and ok({"api_url": API, "token_url": TOKEN_URL})
    assert ok(
        {"objects": {"contact": {"resource": "prospect"}, "company": {"resource": "account", "match_key": "domain"}}}
    )
    assert ok({"objects": {"company": {"resource": "account", "match_key": "custom150"}}})
    assert ok({"objects": {"company": {"resource": "account", "match_key": "customId"}}})
    assert not ok({"objects": {"company": {"resource": "account", "match_key": "custom151"}}})
    assert not ok({"objects": {"contact": {"resource": "prospect", "match_key": "domain"}}})
    assert not ok({"objects": {"deal": {"resource": "opportunity"}}})
    assert not ok({"client_secret": "belongs in secrets"})


@pytest.mark.parametrize("kind", ["prospect", "account"])
def test_capabilities_list_the_writable_attributes_of_the_reference(kind):
    properties = REFERENCE["components"]["schemas"][kind]["properties"]
    writable = [
        name
        for name, prop in properties.items()
        if "badges/readonly" not in prop.get("description", "") and not re.fullmatch(r"custom\d+", name)
    ]

    declared = OutreachConnector.capabilities.objects[kind]

    assert declared["fields"] == writable
    assert {f"custom{i}" for i in range(1, 151)} <= set(properties)
    assert declared["match_key"] in writable


def test_prospects_are_matched_on_emails_an_array_of_strings_in_the_reference():
    emails = REFERENCE["components"]["schemas"]["prospect"]["properties"]["emails"]
    assert (emails["type"], emails["items"]["type"]) == ("array", "string")
    assert OutreachConnector.schema()["objects"]["prospect"]["required"] == ["emails"]
