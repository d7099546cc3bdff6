"""Every kind of answer the mock Outreach gives, checked against Outreach's own reference (contract.py),
and the mock's resources compared field by field with real records captured from an Outreach org."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.response.exceptions import InvalidData

from crms.mocks.runtime import fault_add
from crms.outreach import reference
from tests.crms.outreach import contract

AIRBYTE = {
    row["stream"][:-1]: row["data"]
    for row in map(json.loads, (contract.SHARED / "airbyte" / "expected_records.prospects_accounts.jsonl").open())
}
DOCS_EXAMPLE = Path(__file__).parent / "fixtures" / "docs_making_requests_excerpt.md"
# What the real records hold that the reference does not list: the mock answers the reference's names only.
REAL_ONLY = {
    "prospect": {
        "accountName",
        "companyFollowers",
        "companyFoundedAt",
        "companyIndustry",
        "companyLinkedIn",
        "companyLinkedInEmployees",
        "companyLocality",
        "companyNatural",
        "companySize",
        "companyStartDate",
        "companyType",
        "emailContacts",
        "personaName",
        "smsOptStatus",
        "smsOptedAt",
        "smsOptedOut",
        "stageName",
        "updaterId",
        "updaterType",
        "assignedUsers",
    },
    "account": {"trashedAt", "assignedUsers"},
}


def docs_example() -> Any:
    """The collection answer in Outreach's "Making requests" page (JSON5 with `//...` elisions)."""
    block = re.search(r"```json5\n(\{\n  data:.*?)```", DOCS_EXAMPLE.read_text(), re.S)
    assert block is not None
    text = re.sub(r"^\s*//.*$", "", block.group(1), flags=re.M)
    quoted = re.sub(r"(\w+):\s", r'"\1": ', text)
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", quoted))


def validate(spec: Any, body: Any, path: str = "/prospects") -> None:
    spec.validate_response(
        MockRequest(contract.HOST, "get", f"/api/v2{path}"),
        MockResponse(json.dumps(body).encode(), status_code=200, content_type="application/vnd.api+json"),
    )


# --- the corrections are needed, and only where Outreach's own docs say so -----------------------------


def test_the_reference_as_published_refuses_its_own_docs_example_and_the_corrected_one_takes_it():
    example = docs_example()
    loose = OpenAPI.from_dict(contract.corrected(contract.published(), strict=False))

    with pytest.raises(InvalidData):
        validate(contract.as_published(), example)
    validate(loose, example)


@pytest.mark.parametrize("erratum", ["nulls", "relationship alternatives", "links and to-many"])
def test_each_correction_alone_is_needed_for_the_docs_example(erratum):
    """Leave one correction out and the docs' example is refused again."""
    example = docs_example()
    if erratum == "nulls":
        example["data"][0]["attributes"]["lastName"] = None
    fixed = contract.corrected(contract.published(), strict=False)
    schemas = fixed["components"]["schemas"]
    published = contract.published()["components"]["schemas"]
    if erratum == "nulls":
        schemas["prospect"] = published["prospect"]
    elif erratum == "relationship alternatives":
        account = schemas["prospectRelationships"]["properties"]["account"]
        account["oneOf"] = account.pop("anyOf")
    else:
        schemas["prospectRelationships"]["properties"]["mailings"] = published["prospectRelationships"]["properties"][
            "mailings"
        ]

    with pytest.raises(InvalidData):
        validate(OpenAPI.from_dict(fixed), example)


def test_the_strict_contract_refuses_a_resource_missing_an_attribute_or_holding_an_unknown_one(outreach_api):
    created = outreach_api.create("prospect", emails=["ada@example.com"])
    missing = json.loads(json.dumps(created))
    del missing["attributes"]["title"]
    invented = json.loads(json.dumps(created))
    invented["attributes"]["shoeSize"] = 42

    for resource in (missing, invented):
        with pytest.raises(InvalidData):
            validate(contract.contract(), {"data": [resource]})
    validate(contract.contract(), {"data": [created]})


# --- every kind of answer ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["prospect", "account"])
def test_list_get_create_update_and_delete_answers_match_the_reference(outreach_api, kind):
    attributes = {
        "prospect": {"emails": ["ada@example.com"], "firstName": "Ada", "tags": ["vip"]},
        "account": {"name": "Analytical Engines", "domain": "engines.example", "numberOfEmployees": 3},
    }[kind]
    body = {"data": {"type": kind, "attributes": attributes}}
    contract.check_sent("post", f"/{kind}s", body)
    created = outreach_api.post(f"/{kind}s", body)
    new_id = created.json()["data"]["id"]
    patch = {"data": {"type": kind, "id": new_id, "attributes": {"description" if kind == "account" else "title": "x"}}}
    contract.check_sent("patch", f"/{kind}s/{new_id}", patch)

    answers = [
        ("post", f"/{kind}s", created),
        ("get", f"/{kind}s", outreach_api.get(f"/{kind}s")),
        (
            "get",
            f"/{kind}s",
            outreach_api.get(
                f"/{kind}s", {"filter[updatedAt]": "2020-01-01T00:00:00Z..inf", "sort": "-updatedAt", "page[size]": "1"}
            ),
        ),
        ("get", f"/{kind}s/{new_id}", outreach_api.get(f"/{kind}s/{new_id}")),
        ("patch", f"/{kind}s/{new_id}", outreach_api.patch(f"/{kind}s/{new_id}", patch)),
        ("delete", f"/{kind}s/{new_id}", outreach_api.delete(f"/{kind}s/{new_id}")),
    ]

    assert [status for _, _, a in answers for status in [a.status_code]] == [201, 200, 200, 200, 200, 204]
    for method, path, answer in answers:
        contract.check_answer(method, path, answer)


def test_error_answers_match_the_reference_or_its_error_shape(outreach_api, client, settings):
    outreach_api.create("prospect", emails=["taken@example.com"])
    taken = {"data": {"type": "prospect", "attributes": {"emails": ["taken@example.com"], "numberOfEmployees": "x"}}}
    missing = {"data": {"type": "account", "id": 7, "attributes": {}}}
    answers = [
        (422, "post", "/prospects", outreach_api.post("/prospects", taken)),
        (404, "get", "/prospects/999", outreach_api.get("/prospects/999")),
        (404, "patch", "/accounts/7", outreach_api.patch("/accounts/7", missing)),
        (400, "get", "/prospects", outreach_api.get("/prospects", {"filter[updatedAt]": "yesterday"})),
        (401, "get", "/prospects", client.get("/mock/outreach/api/v2/prospects", HTTP_AUTHORIZATION="Bearer no")),
    ]
    fault_add(system="outreach", calls=1, seconds=None, status=503)
    answers.append((503, "get", "/prospects", outreach_api.get("/prospects")))
    settings.MOCK_OUTREACH_HOURLY_LIMIT = 1
    answers.append((429, "get", "/prospects", outreach_api.get("/prospects")))

    assert [answer.status_code for *_, answer in answers] == [status for status, *_ in answers]
    for _, method, path, answer in answers:
        contract.check_answer(method, path, answer)


# --- the mock against real records (airbyte's, captured from an Outreach org) --------------------------


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}[type(value)]


@pytest.mark.parametrize("kind", ["account", "prospect"])
def test_a_real_record_written_to_the_mock_comes_back_with_the_same_names_and_types(outreach_api, kind):
    real = AIRBYTE[kind]
    listed = reference.resource(kind)
    writable = {k: v for k, v in real.items() if k in listed.attributes and not listed.attributes[k].readonly}
    relationships = {}
    if kind == "prospect":
        account = outreach_api.create(
            "account",
            **{
                k: v
                for k, v in AIRBYTE["account"].items()
                if k in reference.resource("account").attributes
                and not reference.resource("account").attributes[k].readonly
            },
        )
        relationships = {"account": {"data": {"type": "account", "id": account["id"]}}}

    mock = outreach_api.create(kind, relationships, **writable)

    names = set(mock["attributes"]) | set(mock["relationships"]) | {"id"}
    assert set(real) - names == REAL_ONLY[kind]
    for name, value in real.items():
        if name in mock["attributes"]:
            shown = mock["attributes"][name]
            if name in writable:
                assert shown == value, name  # what a user wrote comes back as written
            elif value is not None and shown is not None:
                assert _json_type(shown) == _json_type(value), name
        elif name in mock["relationships"]:
            rel = listed.relationships[name]
            assert ("data" in mock["relationships"][name]) == (not rel.many), name
            assert isinstance(value, list) == rel.many, name  # airbyte flattens to-many to a list of ids
    assert mock["relationships"]["creator"]["data"] == {"type": "user", "id": 1}
