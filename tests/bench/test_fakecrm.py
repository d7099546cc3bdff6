"""bench/fakecrm.py, the in-memory fake CRM the benchmarks drain into, judged without a database.

What no one here wrote does the judging where it can: simple-salesforce (the vendor-side client pinned in
requirements/dev.txt) logs in and drives the Salesforce side, and the vendors' own examples in
../shared/fixtures (restforce, simple-salesforce, Outreach's OpenAPI reference and docs, a real Outreach
record captured by Airbyte) fix the shapes of its answers. Each test starts its own server on a free port.

Our own connectors keep their tokens in a DatabaseStateStore and crms/state.py offers no in-memory store,
so they are not run here: that they push through the fake unchanged was checked by hand.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from openapi_core import OpenAPI
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceMalformedRequest

from bench.fakecrm import FakeCRM, busiest_window, start_in_thread
from crms.outreach.errors import is_email_taken, response_error
from crms.salesforce.mock_schema import normal_id
from tests.crms.outreach.contract import check_answer, corrected, published

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "fixtures"
KEY = "RecordSync_Id__c"
VERSION = "62.0"
JSONAPI = "application/vnd.api+json"


def shared(relative: str) -> Any:
    """A vendor's example from ../shared/fixtures (see its README), parsed."""
    return json.loads((SHARED / relative).read_text())


@pytest.fixture
def start() -> Iterator[Callable[..., FakeCRM]]:
    """Start fake CRMs with the given settings; all are stopped after the test."""
    servers: list[FakeCRM] = []

    def started(**settings: Any) -> FakeCRM:
        servers.append(start_in_thread(0, **settings))
        return servers[-1]

    yield started
    for server in servers:
        server.stop()


@pytest.fixture
def fake(start: Callable[..., FakeCRM]) -> FakeCRM:
    return start()


# --- helpers --------------------------------------------------------------------------------------


class ToFake(HTTPAdapter):
    """Sends simple-salesforce's https://<domain>.salesforce.com and https://<instance> calls to the fake,
    over plain HTTP, path and query unchanged."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.netloc = urlsplit(url).netloc

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        request.url = urlunsplit(("http", self.netloc, parts.path, parts.query, ""))
        return super().send(request, **kwargs)


def to_fake(fake: FakeCRM) -> requests.Session:
    session = requests.Session()
    session.mount("https://", ToFake(fake.url))
    return session


def simple_salesforce(fake: FakeCRM) -> Any:
    """Client credentials by HTTP Basic to a My Domain, as simple-salesforce sends them (its stubs type
    `restful` and the sObject attributes loosely: Any)."""
    return Salesforce(
        consumer_key="bench-client",
        consumer_secret="bench-secret",
        domain="fakeorg.my",
        session=to_fake(fake),
        version=VERSION,
    )


def contacts(*keys: str) -> list[dict[str, Any]]:
    return [{"attributes": {"type": "Contact"}, "LastName": f"Last {k}", KEY: k} for k in keys]


def upsert(sf: Any, records: list[dict[str, Any]], *, all_or_none: bool = False) -> Any:
    return sf.restful(
        f"composite/sobjects/Contact/{KEY}",
        method="PATCH",
        data=json.dumps({"allOrNone": all_or_none, "records": records}),
    )


def sf_token(fake: FakeCRM) -> str:
    form = {"grant_type": "client_credentials", "client_id": "bench", "client_secret": "s"}
    answer = requests.post(f"{fake.url}/services/oauth2/token", data=form, timeout=5)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def outreach_token(fake: FakeCRM) -> dict[str, Any]:
    form = {"grant_type": "refresh_token", "client_id": "bench", "client_secret": "s", "refresh_token": "seed"}
    answer = requests.post(f"{fake.url}/oauth/token", data=form, timeout=5)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def outreach(fake: FakeCRM, token: str, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "Accept": JSONAPI, "Content-Type": JSONAPI}
    data = json.dumps(body) if body is not None else None
    return requests.request(method, f"{fake.url}/api/v2{path}", params=params, data=data, headers=headers, timeout=5)


def prospect(email: str, record_id: int | None = None, **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "prospect"}
    if record_id is not None:
        data["id"] = record_id
    data["attributes"] = {"emails": [email], **attributes}
    return {"data": data}


def log_of(fake: FakeCRM) -> list[list[Any]]:
    calls: list[list[Any]] = requests.get(f"{fake.url}/_fake/log", timeout=5).json()["calls"]
    return calls


def stats_of(fake: FakeCRM) -> dict[str, Any]:
    stats: dict[str, Any] = requests.get(f"{fake.url}/_fake/stats", timeout=5).json()
    return stats


def all_at_once(count: int, call: Callable[[], requests.Response]) -> list[requests.Response]:
    """`count` calls released together from as many threads."""
    gate = threading.Barrier(count)

    def one() -> requests.Response:
        gate.wait()
        return call()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: one(), range(count)))


# --- (a) Salesforce, driven by simple-salesforce ---------------------------------------------------


def test_simple_salesforce_logs_in_and_upserts_through_collections_with_stable_18_character_ids(fake):
    sf = simple_salesforce(fake)

    first = upsert(sf, contacts("a-1", "a-2"))
    again = upsert(sf, contacts("a-1", "a-3"))

    assert sf.session_id and sf.sf_instance == urlsplit(fake.url).netloc
    assert [(r["success"], r["created"], r["errors"]) for r in first] == [(True, True, []), (True, True, [])]
    assert [r["created"] for r in again] == [False, True]  # a repeat is an update
    assert again[0]["id"] == first[0]["id"] and len({first[0]["id"], first[1]["id"], again[1]["id"]}) == 3
    for row in (*first, *again):
        assert len(row["id"]) == 18 and row["id"].startswith("003")  # Contact's key prefix
        assert normal_id(row["id"]) == row["id"]  # the case-safe suffix is the one Salesforce computes
    assert sf.api_usage["api-usage"].used == 2 and sf.api_usage["api-usage"].total == 1_000_000_000


def test_what_simple_salesforce_upserted_reads_back_through_collections_retrieve(fake):
    sf = simple_salesforce(fake)
    ids = [row["id"] for row in upsert(sf, contacts("r-1", "r-2"))]

    rows = sf.restful(
        "composite/sobjects/Contact",
        params={"ids": ",".join([*ids, "003000000000999AAA"]), "fields": f"Id,LastName,{KEY}"},
    )

    assert rows[2] is None  # an id not found answers null in its place
    assert [(r["Id"], r["LastName"], r[KEY]) for r in rows[:2]] == [
        (ids[0], "Last r-1", "r-1"),
        (ids[1], "Last r-2", "r-2"),
    ]
    assert rows[0]["attributes"] == {"type": "Contact", "url": f"/services/data/v{VERSION}/sobjects/Contact/{ids[0]}"}


def test_collections_update_by_id_and_delete_as_the_connector_sends_them(fake):
    sf = simple_salesforce(fake)
    (created,) = upsert(sf, contacts("d-1"))
    record_id = created["id"]

    updated = sf.restful(
        "composite/sobjects",
        method="PATCH",
        data=json.dumps(
            {"allOrNone": False, "records": [{"attributes": {"type": "Contact"}, "id": record_id, "Title": "Dr"}]}
        ),
    )
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": record_id, "allOrNone": "false"})
    again = sf.restful("composite/sobjects", method="DELETE", params={"ids": record_id, "allOrNone": "false"})
    (recreated,) = upsert(sf, contacts("d-1"))

    assert updated == [{"id": record_id, "success": True, "errors": []}]
    assert deleted == [{"id": record_id, "success": True, "errors": []}]
    assert again[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"  # the connector counts it as deleted
    assert recreated["created"] and recreated["id"] != record_id
    stats = stats_of(fake)["by_vendor"]["salesforce"]
    assert (stats["created"], stats["updated"], stats["deleted"], stats["records_upserted"]) == (2, 1, 1, 3)


def test_all_or_none_writes_nothing_when_one_record_fails_and_200_is_the_most_per_call(fake):
    sf = simple_salesforce(fake)
    missing_key = {"attributes": {"type": "Contact"}, "LastName": "No key"}

    answer = upsert(sf, [*contacts("n-1"), missing_key], all_or_none=True)
    partial = upsert(sf, [*contacts("n-1"), missing_key])

    assert [r["errors"][0]["statusCode"] for r in answer] == ["ALL_OR_NONE_OPERATION_ROLLED_BACK", "MISSING_ARGUMENT"]
    assert [r["success"] for r in partial] == [True, False] and partial[0]["created"]  # the first call wrote nothing
    with pytest.raises(SalesforceMalformedRequest) as refused:
        upsert(sf, contacts(*(f"m-{i}" for i in range(201))))
    content: Any = refused.value.content  # the error body (typed loosely by simple-salesforce)
    assert content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_a_session_the_fake_did_not_issue_is_refused_with_invalid_session_id(fake):
    stranger: Any = Salesforce(
        instance_url=fake.url, session_id="00Dnot!issued-here", session=to_fake(fake), version=VERSION
    )

    with pytest.raises(SalesforceExpiredSession) as refused:
        upsert(stranger, contacts("x-1"))

    assert refused.value.status == 401
    assert refused.value.content == shared("salesforce/restforce/expired_session_response.json")
    assert stats_of(fake)["refused_401"] == 1 and stats_of(fake)["created"] == 0


def test_describe_says_the_external_id_field_is_external_id_and_unique_and_limits_gives_the_allocation(fake):
    sf = simple_salesforce(fake)
    upsert(sf, contacts("c-1"))

    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    limits = sf.limits()

    assert {"Id", "LastName", "Email", "SystemModstamp", KEY} <= set(fields)
    assert (fields[KEY]["externalId"], fields[KEY]["unique"], fields[KEY]["type"]) == (True, True, "string")
    assert limits["DailyApiRequests"] == {"Max": 1_000_000_000, "Remaining": 1_000_000_000 - 3}


def test_past_the_allocation_salesforce_answers_403_request_limit_exceeded(start):
    fake = start(usage_total=2)
    sf = simple_salesforce(fake)
    upsert(sf, contacts("l-1"))
    upsert(sf, contacts("l-2"))

    answer = requests.get(
        f"{fake.url}/services/data/v{VERSION}/limits", headers={"Authorization": f"Bearer {sf.session_id}"}, timeout=5
    )

    assert answer.status_code == 403 and answer.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert answer.headers["Sforce-Limit-Info"] == "api-usage=2/2" and "Retry-After" not in answer.headers


# --- (b) the vendors' own examples fix the shapes --------------------------------------------------


def test_the_token_answer_has_every_key_of_salesforces_own_examples(fake):
    answer = requests.post(
        f"{fake.url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "bench", "client_secret": "s"},
        timeout=5,
    ).json()

    restforce = shared("salesforce/restforce/auth_success_response.json")
    simple = shared("salesforce/simple_salesforce/extracted_fixtures.json")["oauth_token_response_success"]
    assert set(restforce) | set(simple) <= set(answer)
    assert answer["token_type"] == "Bearer" and answer["instance_url"] == fake.url
    assert answer["issued_at"].isdigit() and len(answer["issued_at"]) == len(restforce["issued_at"])  # milliseconds
    assert answer["access_token"].startswith("00D") and "!" in answer["access_token"]
    assert re.fullmatch(r".*/id/00D\w{15}/005\w{15}", answer["id"])  # the connector takes the user's id from it


def test_collections_answers_have_the_keys_of_restforces_examples(fake):
    sf = simple_salesforce(fake)
    (row,) = upsert(sf, contacts("k-1"))
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": row["id"], "allOrNone": "false"})
    no_ids = requests.delete(
        f"{fake.url}/services/data/v{VERSION}/composite/sobjects",
        headers={"Authorization": f"Bearer {sf.session_id}"},
        timeout=5,
    )

    success = shared("salesforce/restforce/sobject/composite_sobjects_success_response.json")[0]
    assert set(row) == set(success) | {"created"}  # Collections upsert adds `created`
    assert set(deleted[0]) == set(
        shared("salesforce/restforce/sobject/composite_sobjects_destroy_success_response.json")[0]
    )
    assert (no_ids.status_code, no_ids.json()) == (
        400,
        shared("salesforce/restforce/sobject/composite_sobjects_destroy_bad_request_response.json"),
    )


def test_the_usage_header_is_the_form_simple_salesforce_parses(fake):
    sf = simple_salesforce(fake)
    upsert(sf, contacts("h-1"))
    examples = shared("salesforce/simple_salesforce/extracted_fixtures.json")["sforce_limit_info_header_examples"]
    limits = shared("salesforce/simple_salesforce/extracted_fixtures.json")[
        "limits_response (GET /services/data/vXX.X/limits/)"
    ]

    answer = requests.get(
        f"{fake.url}/services/data/v{VERSION}/limits", headers={"Authorization": f"Bearer {sf.session_id}"}, timeout=5
    )

    header = answer.headers["Sforce-Limit-Info"]
    assert re.fullmatch(r"api-usage=\d+/\d+", header) and re.fullmatch(r"api-usage=\d+/\d+", examples[0]["value"])
    parsed = Salesforce.parse_api_usage(header)["api-usage"]
    assert (parsed.used, parsed.total) == (2, 1_000_000_000)
    assert set(answer.json()["DailyApiRequests"]) == set(limits["DailyApiRequests"])


@pytest.fixture(scope="module")
def reference() -> OpenAPI:
    """Outreach's published reference, with the errata tests/crms/outreach/contract.py proves, not tightened:
    the fake answers with the attributes it was given, not all 230."""
    return OpenAPI.from_dict(corrected(published(), strict=False))


def test_outreach_answers_match_its_reference_and_its_own_records(fake, reference):
    token = outreach_token(fake)["access_token"]

    created = outreach(fake, token, "POST", "/prospects", prospect("ada@example.com", firstName="Ada"))
    found = outreach(fake, token, "GET", "/prospects", **{"filter[emails]": "ADA@example.com", "page[size]": "2"})
    updated = outreach(fake, token, "PATCH", "/prospects/1", prospect("ada@example.com", 1, title="Countess"))
    deleted = outreach(fake, token, "DELETE", "/prospects/1")

    for method, path, answer in [
        ("POST", "/prospects", created),
        ("GET", "/prospects", found),
        ("PATCH", "/prospects/1", updated),
        ("DELETE", "/prospects/1", deleted),
    ]:
        check_answer(method, path, answer, spec=reference)
    schema = published()["components"]["schemas"]
    document = created.json()["data"]
    assert created.status_code == 201 and set(schema["prospectResponse"]["properties"]) <= set(document)
    assert document["type"] == "prospect" and document["id"] == 1
    assert set(document["attributes"]) <= set(schema["prospect"]["properties"])
    assert [row["id"] for row in found.json()["data"]] == [1]  # emails match whatever their case
    assert updated.json()["data"]["attributes"]["title"] == "Countess" and deleted.status_code == 204
    real = json.loads(
        (SHARED / "outreach/airbyte/expected_records.prospects_accounts.jsonl").read_text().splitlines()[0]
    )
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z")
    assert stamp.fullmatch(real["data"]["createdAt"]) and stamp.fullmatch(document["attributes"]["createdAt"])


def test_outreach_refusals_have_its_documented_bodies(fake, reference):
    token = outreach_token(fake)["access_token"]
    outreach(fake, token, "POST", "/prospects", prospect("ada@example.com"))

    taken = outreach(fake, token, "POST", "/prospects", prospect("ada@example.com"))
    missing = outreach(fake, token, "PATCH", "/prospects/9", prospect("bob@example.com", 9))
    wrong_type = requests.post(
        f"{fake.url}/api/v2/prospects",
        json=prospect("bob@example.com"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    stranger = outreach(fake, "not-issued", "GET", "/prospects")

    check_answer("POST", "/prospects", taken, spec=reference)
    assert taken.status_code == 422 and is_email_taken(response_error(taken, now=time.time()))  # the create race
    assert missing.status_code == 404 and missing.json()["errors"][0]["id"] == "resourceNotFound"
    docs = (SHARED / "outreach/docs_making_requests_excerpt.md").read_text()
    assert wrong_type.status_code == 415 and wrong_type.json()["errors"][0]["id"] == "unsupportedMediaType"
    assert wrong_type.json()["errors"][0]["details"] in docs  # the docs' own body, `details` spelling and all
    assert stranger.status_code == 401 and stranger.json()["errors"][0]["id"] == "unauthorizedOauthToken"


def test_outreach_tokens_rotate_and_every_answer_carries_the_rate_limit_headers(fake):
    first, second = outreach_token(fake), outreach_token(fake)

    answer = outreach(fake, first["access_token"], "GET", "")

    assert first["refresh_token"] != second["refresh_token"] and first["expires_in"] == 7200
    assert answer.json()["meta"]["user"]["email"]  # the API root names the token's user (the connector's check)
    assert answer.headers["X-RateLimit-Limit"] == "1000000000"
    assert answer.headers["X-RateLimit-Remaining"] == "999999999"
    reset = int(answer.headers["X-RateLimit-Reset"])
    assert reset % 3600 == 0 and 0 < reset - time.time() <= 3600  # Outreach's allowance resets on the hour


# --- (c) the rate limit ---------------------------------------------------------------------------


def _salesforce_call(fake: FakeCRM) -> Callable[[], requests.Response]:
    token = sf_token(fake)
    url = f"{fake.url}/services/data/v{VERSION}/limits"
    return lambda: requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _outreach_call(fake: FakeCRM) -> Callable[[], requests.Response]:
    token = outreach_token(fake)["access_token"]
    return lambda: outreach(fake, token, "GET", "/prospects", **{"filter[emails]": "x@example.com"})


def _refusal_code(vendor: str, answer: requests.Response) -> str:
    body = answer.json()
    return str(body[0]["errorCode"] if vendor == "salesforce" else body["errors"][0]["id"])


def most_accepted_in_any_window(calls: list[list[Any]], window: float) -> int:
    """The judge, written apart from the fake's own `busiest_window`: from each accepted call, how many
    accepted calls arrive within `window` seconds."""
    accepted = [line[0] for line in calls if line[4] == 200 and not line[3].endswith("/token")]
    return max((sum(1 for t in accepted if start <= t < start + window) for start in accepted), default=0)


@pytest.mark.parametrize(("vendor", "make_call"), [("salesforce", _salesforce_call), ("outreach", _outreach_call)])
def test_twenty_calls_at_once_against_5_per_second_pass_5_and_refuse_15_with_429_and_retry_after(
    start, vendor, make_call
):
    fake = start(limit=5, window=1.0)
    call = make_call(fake)  # the token call before it does not count

    burst = all_at_once(20, call)
    time.sleep(1.05)  # the first window is over
    later = all_at_once(20, call)

    for answers in (burst, later):
        assert sorted(a.status_code for a in answers) == [200] * 5 + [429] * 15
        for refused in (a for a in answers if a.status_code == 429):
            assert refused.headers["Retry-After"] == "1"  # whole seconds until the oldest accepted call leaves
            assert _refusal_code(vendor, refused) == (
                "REQUEST_LIMIT_EXCEEDED" if vendor == "salesforce" else "rateLimitExceeded"
            )
            if vendor == "outreach":
                assert (refused.headers["X-RateLimit-Limit"], refused.headers["X-RateLimit-Remaining"]) == ("5", "0")
    calls = log_of(fake)
    assert [line[4] for line in calls].count(429) == 30 and calls[0][3].endswith("/token")
    assert most_accepted_in_any_window(calls, 1.0) == 5 == busiest_window(calls, 1.0, vendor)
    stats = stats_of(fake)
    assert (stats["calls"], stats["refused_429"], stats["token_calls"]) == (40, 30, 1)


def test_each_vendor_has_its_own_window_and_reset_empties_it(start):
    fake = start(limit=2, window=30.0)
    salesforce, outreach_call = _salesforce_call(fake), _outreach_call(fake)

    statuses = [salesforce().status_code for _ in range(3)] + [outreach_call().status_code for _ in range(3)]
    requests.post(f"{fake.url}/_fake/reset", timeout=5)

    assert statuses == [200, 200, 429, 200, 200, 429]
    assert salesforce().status_code == 200  # the window is empty again, and the token is still good
    assert len(log_of(fake)) == 1 and stats_of(fake)["calls"] == 1


# --- (d) latency ----------------------------------------------------------------------------------


def test_latency_is_slept_per_call_so_eight_concurrent_calls_overlap(start):
    fake = start(latency=0.3)
    call = _salesforce_call(fake)

    began = time.perf_counter()
    answers = all_at_once(8, call)
    elapsed = time.perf_counter() - began

    assert [a.status_code for a in answers] == [200] * 8
    assert all(a.elapsed.total_seconds() >= 0.3 for a in answers)  # every API call waits the latency
    assert elapsed < 8 * 0.3 / 2, f"8 calls of 0.3 s took {elapsed:.2f} s: they did not overlap"
    arrivals = [line[0] for line in log_of(fake) if not line[3].endswith("/token")]
    assert max(arrivals) - min(arrivals) < 0.3  # all arrived before the first one was answered


# --- the process ----------------------------------------------------------------------------------


def test_it_runs_as_its_own_process_without_django():
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "fakecrm.py"), "--port", "0", "--limit", "3", "--window", "2"],
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin"},  # no DJANGO_SETTINGS_MODULE, no PYTHONPATH: the standard library only
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", line)
        assert url, line
        stats = requests.get(f"{url.group(0)}/_fake/stats", timeout=5).json()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert time.perf_counter() - began < 5
    assert stats["settings"] == {"latency": 0.0, "limit": 3, "window": 2.0, "usage_total": 1_000_000_000}
    assert "django" not in (REPO / "bench" / "fakecrm.py").read_text().lower().split('"""', 2)[2]


def test_a_stopped_fake_closes_its_keep_alive_connections_so_a_restart_on_the_port_is_a_new_org(start):
    fake = start()
    port = urlsplit(fake.url).port
    session = requests.Session()  # a pooled keep-alive connection, as our connectors hold one
    token = sf_token(fake)
    limits = f"{fake.url}/services/data/v{VERSION}/limits"
    assert session.get(limits, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200

    fake.stop()
    restarted = start_in_thread(port)
    try:
        again = session.get(limits, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    finally:
        restarted.stop()

    assert again.status_code == 401  # the new server did not issue that token: the connector logs in again
