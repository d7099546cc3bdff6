"""The mock Outreach's collections: the filters and sorts the reference allows (and no others), keyset
cursor paging through links.next, 400 JSON for anything malformed, and its rate-limit headers."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from crms.mocks.models import MockRecord
from crms.mocks.runtime import fault_add
from crms.outreach import reference
from crms.outreach.errors import parse_rate_limit
from crms.outreach.reference import Attribute
from tests.crms.outreach.conftest import MockOutreach

KINDS = ["prospect", "account"]
MINIMAL: dict[str, dict[str, Any]] = {"prospect": {}, "account": {"name": "Acme"}}
EARLY, LATE = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)


def attributes(kind: str, *, filterable: bool | None = None, sortable: bool | None = None) -> list[Attribute]:
    return [
        a
        for a in reference.resource(kind).attributes.values()
        if (filterable is None or a.filterable == filterable) and (sortable is None or a.sortable == sortable)
    ]


def names(kind: str, **flags: bool) -> list[str]:
    return [a.name for a in attributes(kind, **flags)]


def low_and_high(attribute: Attribute) -> tuple[Any, Any]:
    """Two values of the attribute's type, the first sorting before the second."""
    return {
        "string": (f"{attribute.name}-a", f"{attribute.name}-b"),
        "array": (["a@example.com"], ["b@example.com"]),
        "number": (1.5, 2.5),
        "integer": (1, 2),
        "boolean": (False, True),
        "date-time": ("2024-01-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"),
    }[attribute.kind]


def holding(outreach_api: MockOutreach, kind: str, attribute: Attribute, value: Any) -> str:
    """A record whose attribute holds the value; read-only ones are set as Outreach itself would set them."""
    record_id = str(outreach_api.create(kind, **MINIMAL[kind])["id"])
    row = MockRecord.objects.get(system="outreach", object=kind, record_id=record_id)
    if attribute.name in ("createdAt", "updatedAt"):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        row.created_at = row.modified_at = moment
    else:
        row.fields = {**row.fields, attribute.name: value}
    row.save()
    return record_id


def linked_to(outreach_api: MockOutreach, account: dict[str, Any]) -> dict[str, Any]:
    return outreach_api.create("prospect", {"account": {"data": {"type": "account", "id": account["id"]}}})


def ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.content
    return [str(row["id"]) for row in answer.json()["data"]]


def filter_value(attribute: Attribute, value: Any) -> str:
    if attribute.kind == "date-time":
        return f"{value[:10]}T00:00:00Z..{value[:10]}T23:59:59Z"
    if attribute.kind == "array":
        return str(value[0]).upper()  # emails match whatever their case
    return str(value).lower() if attribute.kind == "boolean" else str(value)


def refused(answer: Any, parameter: str) -> str:
    """A 400 JSON:API error naming the parameter; its detail."""
    assert answer.status_code == 400, answer.content
    assert answer["Content-Type"] == "application/vnd.api+json"
    (error,) = answer.json()["errors"]
    assert error["source"] == {"parameter": parameter}
    return str(error["detail"])


# --- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind in KINDS for name in names(kind, filterable=True)])
def test_every_attribute_the_reference_marks_filterable_filters(outreach_api, kind, name):
    attribute = reference.resource(kind).attributes[name]
    low, high = low_and_high(attribute)
    wanted = holding(outreach_api, kind, attribute, low)
    holding(outreach_api, kind, attribute, high)

    assert ids(outreach_api.get(f"/{kind}s", {f"filter[{name}]": filter_value(attribute, low)})) == [wanted]


@pytest.mark.parametrize("kind", KINDS)
def test_every_attribute_the_reference_does_not_mark_filterable_is_refused(outreach_api, kind):
    unfilterable = names(kind, filterable=False)
    assert len(unfilterable) > 150  # custom1..150 among them

    for name in unfilterable:
        detail = refused(outreach_api.get(f"/{kind}s", {f"filter[{name}]": "x"}), f"filter[{name}]")
        assert detail == f"'{name}' is not filterable of {kind}"
    assert "not an attribute" in refused(outreach_api.get(f"/{kind}s", {"filter[shoeSize]": "9"}), "filter[shoeSize]")


def test_a_filter_takes_any_of_several_comma_separated_values(outreach_api):
    first, second, _ = (outreach_api.create("account", name=n)["id"] for n in ("Acme", "Globex", "Initech"))

    assert ids(outreach_api.get("/accounts", {"filter[name]": "Acme,Globex"})) == [str(first), str(second)]
    assert ids(outreach_api.get("/accounts", {"filter[id]": f"{second},{first}"})) == [str(first), str(second)]


def test_updated_at_ranges_are_inclusive_and_open_ended_with_inf_and_neginf(outreach_api):
    attribute = reference.resource("prospect").attributes["updatedAt"]
    old = holding(outreach_api, "prospect", attribute, "2024-01-01T00:00:00.000Z")
    new = holding(outreach_api, "prospect", attribute, "2025-01-01T00:00:00.000Z")

    def between(value: str) -> list[str]:
        return ids(outreach_api.get("/prospects", {"filter[updatedAt]": value}))

    assert between("2024-01-01T00:00:00Z..inf") == [old, new]
    assert between("2024-01-01T00:00:00.001Z..inf") == [new]
    assert between("neginf..2024-01-01T00:00:00Z") == [old]
    assert between("2023-01-01T00:00:00+02:00..2024-06-01T00:00:00Z") == [old]
    assert between("neginf..inf") == [old, new]


def test_the_new_filter_syntax_takes_operators_and_never_a_range(outreach_api):
    attribute = reference.resource("prospect").attributes["updatedAt"]
    old = holding(outreach_api, "prospect", attribute, "2024-01-01T00:00:00.000Z")
    new = holding(outreach_api, "prospect", attribute, "2025-01-01T00:00:00.000Z")
    new_syntax = {"newFilterSyntax": "true"}

    assert ids(outreach_api.get("/prospects", {**new_syntax, "filter[updatedAt][gte]": "2024-06-01T00:00:00Z"})) == [
        new
    ]
    assert ids(outreach_api.get("/prospects", {**new_syntax, "filter[updatedAt][lt]": "2025-01-01T00:00:00Z"})) == [old]
    mixed = outreach_api.get("/prospects", {**new_syntax, "filter[updatedAt]": "2024-01-01T00:00:00Z..inf"})
    assert "not a range" in refused(mixed, "filter[updatedAt]")
    classic = outreach_api.get("/prospects", {"filter[updatedAt][gte]": "2024-01-01T00:00:00Z"})
    assert "newFilterSyntax=true" in refused(classic, "filter[updatedAt][gte]")


def test_prospects_are_filtered_by_the_account_attributes_the_reference_names(outreach_api):
    acme = outreach_api.create("account", name="Acme", customId="A-1")
    globex = outreach_api.create("account", name="Globex", named=False)
    at_acme, at_globex = (str(linked_to(outreach_api, account)["id"]) for account in (acme, globex))
    alone = str(outreach_api.create("prospect")["id"])

    def by(parameter: str, value: str) -> list[str]:
        return ids(outreach_api.get("/prospects", {parameter: value}))

    assert by("filter[account][id]", str(acme["id"])) == [at_acme]
    assert by("filter[account][name]", "Globex") == [at_globex]
    assert by("filter[account][customId]", "A-1") == [at_acme]
    assert by("filter[account][named]", "false") == [at_globex]
    assert by("filter[account][updatedAt]", "2000-01-01T00:00:00Z..inf") == [at_acme, at_globex]
    assert alone not in by("filter[account][updatedAt]", "neginf..inf")
    assert "on id, customId, name, named, updatedAt" in refused(
        outreach_api.get("/prospects", {"filter[account][domain]": "acme.example"}), "filter[account][domain]"
    )


def test_relationships_the_reference_says_cannot_filter_are_refused_and_user_ids_filter(outreach_api):
    owned = outreach_api.create("prospect", {"owner": {"data": {"type": "user", "id": 5}}})
    outreach_api.create("prospect")

    assert ids(outreach_api.get("/prospects", {"filter[owner][id]": "5"})) == [str(owned["id"])]
    assert ids(outreach_api.get("/prospects", {"filter[stage][name]": "Interested"})) == []  # no stages in the mock
    for parameter in ("filter[creator][id]", "filter[mailings][id]", "filter[owner][email]", "filter[account]"):
        assert "filtered by" in refused(outreach_api.get("/prospects", {parameter: "1"}), parameter)


# --- sorts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind in KINDS for name in names(kind, sortable=True)])
def test_every_attribute_the_reference_marks_sortable_sorts_both_ways(outreach_api, kind, name):
    attribute = reference.resource(kind).attributes[name]
    low, high = low_and_high(attribute)
    second = holding(outreach_api, kind, attribute, high)
    first = holding(outreach_api, kind, attribute, low)

    assert ids(outreach_api.get(f"/{kind}s", {"sort": name})) == [first, second]
    assert ids(outreach_api.get(f"/{kind}s", {"sort": f"-{name}"})) == [second, first]


@pytest.mark.parametrize("kind", KINDS)
def test_every_attribute_the_reference_does_not_mark_sortable_is_refused(outreach_api, kind):
    for name in names(kind, sortable=False):
        assert (
            refused(outreach_api.get(f"/{kind}s", {"sort": f"-{name}"}), "sort")
            == f"'{name}' is not sortable of {kind}"
        )


def test_sorts_combine_and_ties_are_broken_by_id(outreach_api):
    made = [outreach_api.create("account", name=name)["id"] for name in ("B", "A", "B", "A")]

    assert ids(outreach_api.get("/accounts", {"sort": "name"})) == [str(made[i]) for i in (1, 3, 0, 2)]
    assert ids(outreach_api.get("/accounts", {"sort": "-name,-id"})) == [str(made[i]) for i in (2, 0, 3, 1)]
    assert ids(outreach_api.get("/accounts")) == [str(i) for i in made]  # by id when no sort is asked


# --- malformed queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("filter[updatedAt]", "yesterday"),
        ("filter[updatedAt]", "2024-13-01T00:00:00Z..inf"),
        ("filter[updatedAt]", "2024-01-01T00:00:00Z..tomorrow"),
        ("filter[createdAt]", ""),
        ("filter[engagedScore]", "high"),
        ("filter[id]", "1,two"),
        ("page[size]", "abc"),
        ("page[size]", "0"),
        ("page[size]", "1001"),
        ("page[size]", "-5"),
        ("page[size]", "1.5"),
        ("page[size]", ""),
        ("sort", "shoeSize"),
        ("sort", "title,,"),
        ("sort", "-"),
        ("sort", "emails"),
        ("page[after]", "not-a-cursor"),
        ("page[after]", "eyJ4IjogMX0="),
        ("page[number]", "2"),
        ("include", "account"),
        ("fields[prospect]", "emails"),
        ("filter[]", "1"),
        ("filter[a][b][c]", "1"),
        ("filter[id", "1"),
    ],
)
def test_a_malformed_query_is_a_400_json_error_naming_the_parameter_never_a_500(outreach_api, parameter, value):
    outreach_api.create("prospect")

    assert refused(outreach_api.get("/prospects", {parameter: value}), parameter)


def test_a_cursor_from_another_sort_is_refused(outreach_api):
    for _ in range(3):
        outreach_api.create("prospect")
    by_id = outreach_api.get("/prospects", {"page[size]": "1"}).json()["links"]["next"]
    cursor = parse_qs(urlsplit(by_id).query)["page[after]"][0]

    answer = outreach_api.get("/prospects", {"page[size]": "1", "sort": "-updatedAt", "page[after]": cursor})

    assert "follow links.next" in refused(answer, "page[after]")


# --- paging ---------------------------------------------------------------------------------------


def test_links_next_carries_every_original_parameter_and_is_absent_on_the_last_page(outreach_api):
    for _ in range(3):
        outreach_api.create("prospect")
    asked = {"filter[updatedAt]": "2000-01-01T00:00:00Z..inf", "sort": "updatedAt", "page[size]": "2", "count": "false"}

    first = outreach_api.get("/prospects", asked).json()
    query = parse_qs(urlsplit(first["links"]["next"]).query)
    last = outreach_api.client.get(first["links"]["next"], headers=outreach_api.headers).json()

    assert {k: v[0] for k, v in query.items() if k != "page[after]"} == asked and query["page[after]"][0]
    assert len(first["data"]) == 2 and len(last["data"]) == 1 and "next" not in last["links"]
    assert "meta" not in first  # count=false
    assert outreach_api.get("/prospects").json()["meta"] == {"count": 3}


def test_a_record_edited_mid_walk_is_neither_skipped_nor_shifts_the_pages_after_it(outreach_api):
    made = [str(outreach_api.create("prospect", firstName=f"p{i}")["id"]) for i in range(6)]
    MockRecord.objects.filter(system="outreach").update(modified_at=timezone.now() - timedelta(minutes=5))
    seen: list[str] = []
    answer = outreach_api.get("/prospects", {"sort": "updatedAt", "page[size]": "2"}).json()
    seen += [str(r["id"]) for r in answer["data"]]
    for edited in (made[0], made[3]):  # one already read, one on the next page: both move to the end
        outreach_api.patch(
            f"/prospects/{edited}", {"data": {"type": "prospect", "id": int(edited), "attributes": {"title": "moved"}}}
        )
    while answer["links"].get("next"):
        answer = outreach_api.client.get(answer["links"]["next"], headers=outreach_api.headers).json()
        seen += [str(r["id"]) for r in answer["data"]]

    assert sorted(set(seen)) == sorted(made)
    assert seen[-2:] == [made[0], made[3]]  # their new state, once more, at the end


def test_the_offset_paging_fault_makes_a_walk_skip_the_record_after_one_that_moved(outreach_api):
    """For proving a reader survives an API that pages by offset (sync's reconcile rechecks by id)."""
    made = [str(outreach_api.create("prospect", firstName=f"p{i}")["id"]) for i in range(6)]
    MockRecord.objects.filter(system="outreach").update(modified_at=timezone.now() - timedelta(minutes=5))
    fault_add(system="outreach", calls=None, seconds=60, code="offset_paging", latency_ms=1)
    answer = outreach_api.get("/prospects", {"sort": "updatedAt", "page[size]": "2"}).json()
    seen = [str(r["id"]) for r in answer["data"]]
    outreach_api.patch(f"/prospects/{made[0]}", {"data": {"type": "prospect", "id": int(made[0]), "attributes": {}}})
    while answer["links"].get("next"):
        answer = outreach_api.client.get(answer["links"]["next"], headers=outreach_api.headers).json()
        seen += [str(r["id"]) for r in answer["data"]]

    assert made[2] not in seen and seen == [made[i] for i in (0, 1, 3, 4, 5, 0)]


# --- rate limit -----------------------------------------------------------------------------------


def test_the_hourly_cap_answers_429_with_retry_after_the_seconds_to_the_reset(outreach_api, settings):
    settings.MOCK_OUTREACH_HOURLY_LIMIT = 1
    assert outreach_api.get("/prospects").status_code == 200

    answer = outreach_api.get("/prospects")

    assert answer.status_code == 429 and answer.json()["errors"][0]["id"] == "rateLimitExceeded"
    reset = int(answer["X-RateLimit-Reset"])
    assert abs(int(answer["Retry-After"]) - math.ceil(reset - time.time())) <= 2
    assert 0 < int(answer["Retry-After"]) <= 3600 and reset % 3600 == 0
    assert answer["X-RateLimit-Remaining"] == "0"


def test_a_fault_can_make_x_ratelimit_remaining_hold_two_numbers_of_which_the_connector_reads_the_smaller(
    outreach_api, staff_api
):
    armed = staff_api.post(
        "/v1/crms/mock/outreach/faults", {"code": "two_number_remaining", "latency_ms": 1, "calls": 1}, format="json"
    )
    assert armed.status_code == 201

    odd, plain = outreach_api.get("/prospects"), outreach_api.get("/prospects")

    assert odd.status_code == plain.status_code == 200
    first, second = (int(n) for n in odd["X-RateLimit-Remaining"].split(", "))
    assert first == int(odd["X-RateLimit-Limit"]) - 1 and second > first
    assert parse_rate_limit(odd.headers)["remaining"] == first
    assert "," not in plain["X-RateLimit-Remaining"]
