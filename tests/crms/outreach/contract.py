"""Outreach's own reference (../shared/fixtures/outreach/outreach.oas.json) as a contract for the mock's answers.

The reference is read as published, with three corrections where it contradicts Outreach's own docs
and real records, each shown necessary by a test (test_contract.py), and with tightenings that make
it demand what the mock promises:

- Errata. (1) Every attribute may be null: the docs' example answer has `lastName: null`, the real
  records (airbyte fixture) nulls in most attributes. (2) A relationship's alternatives ({data} or
  {links}) are `anyOf`, not `oneOf`: as written both accept any object, so `oneOf` refuses every
  relationship, the docs' example included. (3) `links.related` is a URL (the docs' example), not the
  related type's name, and a to-many relationship is one relationship object (`mailings: {links: …}`
  in the docs' example, JSON:API 1.0), not an array of them.
- Tightenings. Every attribute and relationship the reference lists is required and no other is
  allowed; a relationship object must hold the key its alternative is named for; a resource must have
  type, id, attributes and relationships; a resource identifier must have type and id.

The reference declares no query parameters and no 400/401/404-on-write/429 answers: those bodies are
checked against the one error shape it declares (the 422's), with `id`, `title` and `detail` required.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "fixtures" / "outreach"
FULL_REFERENCE = SHARED / "outreach.oas.json"
PATHS = ("/prospects", "/prospects/{id}", "/accounts", "/accounts/{id}")
KINDS = ("prospect", "account")
HOST = "https://api.outreach.io"


@cache
def published() -> dict[str, Any]:
    """The whole reference, as Outreach's developer portal serves it (a clean clone has ../shared beside it)."""
    if not FULL_REFERENCE.exists():
        raise FileNotFoundError(f"{FULL_REFERENCE}: the shared fixture set belongs beside the repository (../shared)")
    loaded: dict[str, Any] = json.loads(FULL_REFERENCE.read_text())
    return loaded


def subset(reference: dict[str, Any]) -> dict[str, Any]:
    """The four paths the connector uses and the schemas they name, values unchanged (fixtures/SOURCE.md)."""
    names = [f"{kind}{part}" for kind in KINDS for part in ("", "Relationships", "Response")]
    return {k: reference[k] for k in ("openapi", "info", "servers", "security")} | {
        "paths": {p: reference["paths"][p] for p in PATHS},
        "components": {
            "schemas": {n: reference["components"]["schemas"][n] for n in names},
            "securitySchemes": reference["components"]["securitySchemes"],
        },
    }


def corrected(reference: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """The subset with the three errata applied, and (strict) the tightenings."""
    spec = copy.deepcopy(subset(reference))
    schemas = spec["components"]["schemas"]
    for kind in KINDS:
        for attribute in schemas[kind]["properties"].values():
            attribute["nullable"] = True
        relationships = schemas[f"{kind}Relationships"]["properties"]
        for name, relationship in relationships.items():
            relationships[name] = _relationship(relationship, strict=strict)
        if strict:
            for listed in (schemas[kind], schemas[f"{kind}Relationships"]):
                listed["required"] = sorted(listed["properties"])
                listed["additionalProperties"] = False
            schemas[f"{kind}Response"]["required"] = ["type", "id", "attributes", "relationships"]
    return spec


def _relationship(schema: dict[str, Any], *, strict: bool) -> dict[str, Any]:
    many = schema.get("type") == "array"
    alternatives = _leaves(schema["items"] if many else schema)
    fixed = []
    for alternative in alternatives:
        alternative = copy.deepcopy(alternative)
        properties = alternative["properties"]
        if "links" in properties:
            properties["links"]["properties"]["related"] = {"type": "string"}
        if "data" in properties:
            identifier = properties["data"]
            identifier["type"] = "object"
            if strict:
                identifier["required"] = ["type", "id"]
            properties["data"] = {"type": "array", "items": identifier} if many else identifier | {"nullable": True}
        if strict:
            alternative["required"] = list(properties)
        alternative["type"] = "object"
        fixed.append(alternative)
    return {"anyOf": fixed, "description": schema.get("description", "")}


def _leaves(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [leaf for alt in schema["oneOf"] for leaf in _leaves(alt)] if "oneOf" in schema else [schema]


@cache
def contract() -> OpenAPI:
    return OpenAPI.from_dict(corrected(published()))


@cache
def as_published() -> OpenAPI:
    return OpenAPI.from_dict(subset(published()))


def error_schema() -> dict[str, Any]:
    """The reference's one error shape (its 422), with each error's id, title and detail required."""
    content = published()["paths"]["/prospects"]["post"]["responses"]["422"]["content"]
    schema: dict[str, Any] = copy.deepcopy(content["application/vnd.api+json"]["schema"])
    schema["required"] = ["errors"]
    schema["properties"]["errors"]["items"]["required"] = ["id", "title", "detail"]
    return schema


def check_answer(method: str, path: str, answer: Any, spec: OpenAPI | None = None) -> None:
    """One answer of the mock (a requests or a Django test response) against the contract: by
    openapi-core where the reference has the operation and status, else (an error the reference does
    not list) against its error shape. A 204 has no body to check (the reference gives it no schema)."""
    if answer.status_code == 204:
        assert answer.content == b""
        return
    assert answer.headers["Content-Type"].split(";")[0] == "application/vnd.api+json", answer.headers
    declared = _declared(method, path, answer.status_code)
    if declared:
        (spec or contract()).validate_response(
            MockRequest(HOST, method, f"/api/v2{path}"),
            MockResponse(answer.content, status_code=answer.status_code, content_type="application/vnd.api+json"),
        )
    else:
        assert answer.status_code >= 400, f"{method} {path} {answer.status_code} is not in the reference"
        OAS30Validator(error_schema()).validate(answer.json())


def check_sent(method: str, path: str, body: Any) -> None:
    """A request body we send the mock is one the reference accepts (as published: requests need no errata)."""
    as_published().validate_request(
        MockRequest(
            HOST,
            method,
            f"/api/v2{path}",
            headers={"Authorization": "Bearer a-token"},
            data=json.dumps(body).encode(),
            content_type="application/vnd.api+json",
        )
    )


def _declared(method: str, path: str, status: int) -> bool:
    template = "/prospects/{id}" if path.startswith("/prospects/") else path
    template = "/accounts/{id}" if path.startswith("/accounts/") else template
    operation = published()["paths"].get(template, {}).get(method.lower(), {})
    return str(status) in operation.get("responses", {})
