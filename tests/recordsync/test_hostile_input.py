"""Issue 15, "inputs that crash or stall": each body below answered 500 (or was stored, then could not be read
back) before; now each is a 4xx in the one error shape, naming the limit and where in the body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync.models import SyncEvent

pytestmark = pytest.mark.django_db


def event(**data: Any) -> dict[str, Any]:
    return {"operation": "create", "record_id": "h-1", "object_type": "Contact", "data": {"LastName": "L", **data}}


def post_raw(api: Any, body: str | bytes, content_type: str = "application/json") -> Any:
    return api.post("/v1/sync/", data=body, content_type=content_type)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    error: dict[str, Any] = response.json()["error"]
    assert error["request_id"] and error["fields"], error
    return error


def test_json_nested_960_deep_is_a_400_naming_the_limit_not_a_500(api):
    body = '{"operation": "create", "data": ' + "[" * 960 + "]" * 960 + "}"

    error = error_of(post_raw(api, body), 400)

    assert error["code"] == "parse_error" and "nested at most 32 levels" in error["message"]
    assert not SyncEvent.objects.exists()


def test_json_a_little_too_deep_is_a_400_naming_where(api):
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}

    error = error_of(post_raw(api, json.dumps(event(Notes=deep))), 400)

    assert error["fields"][0]["field"].startswith("data.Notes.a.a")
    assert "nested at most 32 levels" in error["fields"][0]["message"]


@pytest.mark.parametrize(("raw", "what"), [("\\ud800", "lone surrogate"), ("\\u0000", "NUL")])
def test_a_lone_surrogate_or_a_nul_is_refused_naming_its_path_and_nothing_is_stored(api, raw, what):
    body = json.dumps([event(), event(FirstName="PLACEHOLDER")]).replace("PLACEHOLDER", f"Ada{raw}")

    error = error_of(post_raw(api, body), 400)

    assert error["code"] == "parse_error" and error["fields"][0]["field"] == "[1].data.FirstName"
    assert what in error["message"]
    assert not SyncEvent.objects.exists()


def test_a_lone_surrogate_in_a_key_is_refused_too(api):
    body = json.dumps(event(PLACEHOLDER="x")).replace("PLACEHOLDER", "\\udfff")

    error = error_of(post_raw(api, body), 400)

    assert error["fields"][0]["field"] == "data.\\udfff"  # written out, so the answer itself can be encoded
    assert "the key holds a lone surrogate" in error["message"]


def test_bad_json_names_the_body(api):
    error = error_of(post_raw(api, '{"operation": '), 400)

    assert error["code"] == "parse_error" and error["fields"] == [{"field": "body", "message": error["message"]}]
    assert error["message"].startswith("Not valid JSON:")


def test_a_body_that_is_not_json_is_a_415_naming_the_content_type(api):
    error = error_of(post_raw(api, "operation=create", content_type="application/x-www-form-urlencoded"), 415)

    assert error["fields"][0]["field"] == "Content-Type" and "application/json" in error["fields"][0]["message"]


def test_a_body_over_the_limit_is_a_413_that_reads_right_and_names_the_body(api, settings):
    settings.INGEST_MAX_BODY_BYTES = 2048
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None  # so that our parser, not Django's guard, measures it

    error = error_of(post_raw(api, json.dumps(event(Notes="x" * 4000))), 413)

    assert error["message"].startswith("The request body is ") and "bytes; the limit is 2048 bytes." in error["message"]
    assert error["fields"][0]["field"] == "body"


def test_a_cursor_that_was_never_given_out_is_a_400_naming_cursor(api):
    error = error_of(api.get("/v1/sync/jobs", {"cursor": "not-a-cursor"}), 400)

    assert error["code"] == "validation_error" and error["fields"][0]["field"] == "cursor"
