"""The mock Outreach's prospects and accounts as the reference shapes them: every attribute and
relationship in every answer, values typed as the reference types them, read-only ones refused."""

from __future__ import annotations

from typing import Any

import pytest

from crms.outreach import reference
from tests.crms.outreach.conftest import MockOutreach

KINDS = ["prospect", "account"]
MINIMAL: dict[str, dict[str, Any]] = {
    "prospect": {"emails": ["ada@example.com"]},
    "account": {"name": "Analytical Engines"},
}


def answers_for(outreach_api: MockOutreach, kind: str) -> list[dict[str, Any]]:
    """The resource as each kind of answer carries it: create, get, list and update."""
    created = outreach_api.create(kind, **MINIMAL[kind])
    path = f"/{kind}s/{created['id']}"
    fetched = outreach_api.get(path).json()["data"]
    (listed,) = outreach_api.get(f"/{kind}s").json()["data"]
    updated = outreach_api.patch(path, {"data": {"type": kind, "id": created["id"], "attributes": {}}}).json()["data"]
    return [created, fetched, listed, updated]


@pytest.mark.parametrize("kind", KINDS)
def test_every_attribute_of_the_reference_is_in_every_answer_in_its_order(outreach_api, kind):
    listed = list(reference.resource(kind).attributes)

    for answer in answers_for(outreach_api, kind):
        assert list(answer["attributes"]) == listed


@pytest.mark.parametrize("kind", KINDS)
def test_every_relationship_of_the_reference_is_in_every_answer_shaped_as_outreach_shows_them(outreach_api, kind):
    relationships = reference.resource(kind).relationships

    for answer in answers_for(outreach_api, kind):
        assert set(answer["relationships"]) == set(relationships)
        for name, rel in relationships.items():
            shown = answer["relationships"][name]
            if rel.many:
                related = shown["links"]["related"]
                assert related.endswith(f"{rel.collection}?filter[{kind}][id]={answer['id']}"), related
            else:
                assert set(shown) == {"data"}
                assert shown["data"] is None or shown["data"] == {"type": rel.to, "id": shown["data"]["id"]}


def test_unset_attributes_show_what_outreach_shows_for_them(outreach_api):
    prospect = outreach_api.create("prospect", emails=["ada@example.com"], firstName="Ada", lastName="Lovelace")
    account = outreach_api.create("account", name="Analytical Engines")

    shown = prospect["attributes"]
    assert shown["title"] is None and shown["custom150"] is None and shown["linkedInConnections"] is None
    assert shown["tags"] == [] and shown["homePhones"] == []
    assert (shown["optedOut"], shown["callOptedOut"], shown["emailOptedOut"]) == (False, False, False)
    assert (shown["clickCount"], shown["openCount"], shown["replyCount"], shown["engagedScore"]) == (0, 0, 0, 0.0)
    assert shown["contactHistogram"] == [[0, 0]] * 12
    assert shown["name"] == "Ada Lovelace"  # read-only: "the full name of the prospect"
    assert shown["createdAt"] == shown["updatedAt"] and shown["createdAt"].endswith("Z")
    assert account["attributes"]["named"] is True and account["attributes"]["numberOfEmployees"] is None


def test_the_creator_and_updater_are_the_user_who_authorised_and_unset_links_are_null(outreach_api):
    prospect = outreach_api.create("prospect", emails=["ada@example.com"])

    relationships = prospect["relationships"]
    assert relationships["creator"]["data"] == relationships["updater"]["data"] == {"type": "user", "id": 1}
    assert relationships["account"] == relationships["owner"] == relationships["stage"] == {"data": None}


def test_a_prospect_is_linked_to_an_account_and_unlinked_with_null(outreach_api):
    account = outreach_api.create("account", name="Analytical Engines")
    link = {"account": {"data": {"type": "account", "id": account["id"]}}, "owner": {"data": {"type": "user", "id": 5}}}
    prospect = outreach_api.create("prospect", link, emails=["ada@example.com"])
    path = f"/prospects/{prospect['id']}"

    unlinked = outreach_api.patch(
        path, {"data": {"type": "prospect", "id": prospect["id"], "relationships": {"account": {"data": None}}}}
    )

    assert prospect["relationships"]["account"]["data"] == {"type": "account", "id": account["id"]}
    assert prospect["relationships"]["owner"]["data"] == {"type": "user", "id": 5}
    assert unlinked.json()["data"]["relationships"]["account"] == {"data": None}
    assert unlinked.json()["data"]["relationships"]["owner"]["data"] == {"type": "user", "id": 5}


@pytest.mark.parametrize(
    ("kind", "attribute", "value", "says"),
    [
        ("account", "numberOfEmployees", "many", "must be an integer, not the string 'many'"),
        ("account", "numberOfEmployees", 12.5, "must be an integer"),
        ("account", "numberOfEmployees", True, "must be an integer"),
        ("account", "buyerIntentScore", "high", "must be a number"),
        ("account", "named", "yes", "must be true or false"),
        ("account", "tags", "vip", "must be a list of strings"),
        ("account", "foundedAt", "last year", "must be an ISO 8601 date and time"),
        ("account", "domain", "x" * 256, "is too long (maximum is 255 characters)"),
        ("prospect", "emails", "ada@example.com", "must be a list of strings"),
        ("prospect", "emails", ["not an address"], "must be a list of email addresses"),
        ("prospect", "dateOfBirth", "30/12/1990", "must be an ISO 8601 date"),
        ("prospect", "linkedInConnections", "500+", "must be an integer"),
        ("prospect", "optedOut", 1, "must be true or false"),
        ("prospect", "firstName", ["Ada"], "must be a string"),
        ("prospect", "score", {"value": 1}, "must be a number, not an object"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_422_pointing_at_the_attribute(outreach_api, kind, attribute, value, says):
    attributes = {**MINIMAL[kind], attribute: value}

    answer = outreach_api.post(f"/{kind}s", {"data": {"type": kind, "attributes": attributes}})

    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["id"] == "validationError" and error["source"] == {"pointer": f"/data/attributes/{attribute}"}
    assert error["detail"].startswith(attribute) and says in error["detail"]
    assert outreach_api.get(f"/{kind}s").json()["data"] == []


def test_the_same_type_check_applies_to_updates_and_names_every_wrong_attribute_at_once(outreach_api):
    account = outreach_api.create("account", name="Analytical Engines")
    bad = {"numberOfEmployees": "many", "followers": "lots", "shoeSize": 42, "domain": "engines.example"}

    answer = outreach_api.patch(
        f"/accounts/{account['id']}", {"data": {"type": "account", "id": account["id"], "attributes": bad}}
    )

    assert answer.status_code == 422
    pointers = [e["source"]["pointer"] for e in answer.json()["errors"]]
    assert pointers == ["/data/attributes/numberOfEmployees", "/data/attributes/followers", "/data/attributes/shoeSize"]
    assert outreach_api.get(f"/accounts/{account['id']}").json()["data"]["attributes"]["domain"] is None


def test_right_types_and_null_are_accepted_and_come_back_as_written(outreach_api):
    values = {
        "numberOfEmployees": 9,
        "buyerIntentScore": 7,
        "named": False,
        "tags": ["a", "b"],
        "foundedAt": "1843-01-01T00:00:00.000Z",
        "linkedInUrl": None,
        "custom7": "seven",
    }
    account = outreach_api.create("account", name="Analytical Engines", **values)

    cleared = outreach_api.patch(
        f"/accounts/{account['id']}",
        {"data": {"type": "account", "id": account["id"], "attributes": {"custom7": None}}},
    )

    assert {k: account["attributes"][k] for k in values} == values
    assert cleared.json()["data"]["attributes"]["custom7"] is None


@pytest.mark.parametrize(
    ("kind", "attribute", "value"),
    [
        ("prospect", "clickCount", 3),
        ("prospect", "name", "Ada L."),
        ("prospect", "createdAt", "2024-01-01T00:00:00Z"),
        ("prospect", "engagedScore", 1.5),
        ("account", "touchedAt", "2024-01-01T00:00:00Z"),
        ("account", "updatedAt", "2024-01-01T00:00:00Z"),
    ],
)
def test_a_read_only_attribute_is_refused_with_a_422_on_create_and_on_update(outreach_api, kind, attribute, value):
    """The reference badges them read-only and declares only 422 for a refused write; ignoring them would
    hide the caller's mistake, so the mock refuses them."""
    created = outreach_api.create(kind, **MINIMAL[kind])
    path = f"/{kind}s/{created['id']}"

    posted = outreach_api.post(f"/{kind}s", {"data": {"type": kind, "attributes": {**MINIMAL[kind], attribute: value}}})
    patched = outreach_api.patch(path, {"data": {"type": kind, "id": created["id"], "attributes": {attribute: value}}})

    for answer in (posted, patched):
        assert answer.status_code == 422
        (error,) = answer.json()["errors"]
        assert error["source"]["pointer"] == f"/data/attributes/{attribute}" and "read-only" in error["detail"]
    assert outreach_api.get(path).json()["data"]["attributes"][attribute] == created["attributes"][attribute]


@pytest.mark.parametrize(
    ("relationships", "says"),
    [
        ({"account": {"data": {"type": "account", "id": 99}}}, "there is no account with id 99"),
        ({"account": {"data": {"type": "user", "id": 1}}}, 'must be {"data": null} or'),
        ({"account": {"data": {"type": "account", "id": "1"}}}, "account.data.id must be an integer"),
        ({"creator": {"data": {"type": "user", "id": 1}}}, "creator is read-only"),
        ({"mailings": {"data": []}}, "mailings is read-only"),
        ({"favorites": {"data": []}}, "the mock keeps to-one relationships only"),
        ({"boss": {"data": None}}, "boss is not a relationship of prospect"),
    ],
)
def test_a_wrong_relationship_is_a_422_pointing_at_it(outreach_api, relationships, says):
    body = {"data": {"type": "prospect", "attributes": MINIMAL["prospect"], "relationships": relationships}}

    answer = outreach_api.post("/prospects", body)

    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["source"]["pointer"] == f"/data/relationships/{next(iter(relationships))}" and says in error["detail"]


def test_a_wrong_type_or_id_in_the_body_is_a_422(outreach_api):
    prospect = outreach_api.create("prospect", **MINIMAL["prospect"])
    path = f"/prospects/{prospect['id']}"

    answers = [
        outreach_api.post("/prospects", {"data": {"type": "account", "attributes": {}}}),
        outreach_api.patch(path, {"data": {"type": "prospect", "id": str(prospect["id"]), "attributes": {}}}),
        outreach_api.patch(path, {"data": {"type": "account", "id": prospect["id"], "attributes": {}}}),
    ]

    assert [a.status_code for a in answers] == [422, 422, 422]
    assert [a.json()["errors"][0]["source"]["pointer"] for a in answers] == ["/data/type", "/data/id", "/data/type"]


def test_attribute_and_relationship_problems_come_back_together_in_one_422(outreach_api):
    body = {
        "data": {
            "type": "prospect",
            "attributes": {"emails": "ada@example.com", "clickCount": 1},
            "relationships": {"account": {"data": {"type": "account", "id": 404}}},
        }
    }

    answer = outreach_api.post("/prospects", body)

    assert answer.status_code == 422
    assert [e["source"]["pointer"] for e in answer.json()["errors"]] == [
        "/data/attributes/emails",
        "/data/attributes/clickCount",
        "/data/relationships/account",
    ]
