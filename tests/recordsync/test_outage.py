"""The database down answers 503 in the one error shape, with Retry-After, and one log line per outage."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.db import OperationalError

from recordsync import errors

pytestmark = pytest.mark.django_db


@pytest.fixture
def database_down(monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    monkeypatch.setattr("sync.ingest.services.event_ingest", refuse)
    ticks = iter(float(t) for t in (0, 1, 2, 200))
    monkeypatch.setattr(errors.outages, "clock", lambda: next(ticks))
    monkeypatch.setattr(errors.outages, "_last", {})


def post(api: Any) -> Any:
    body = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": {"email": "a@example.com"}}
    return api.post("/v1/sync/", data=json.dumps(body), content_type="application/json")


def test_a_database_outage_answers_503_with_retry_after_and_logs_one_line(api, database_down, caplog):
    caplog.set_level(logging.WARNING, logger="recordsync.errors")

    answers = [post(api) for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 503, 503]
    assert answers[0]["Retry-After"] == "5"
    assert answers[0].json()["error"]["code"] == "service_unavailable"
    assert answers[0].json()["error"]["request_id"]
    outage_lines = [r for r in caplog.records if r.getMessage() == "dependency unavailable"]
    assert len(outage_lines) == 1 and not any(r.exc_info for r in caplog.records)


def test_a_new_outage_after_a_quiet_minute_logs_again(api, database_down, caplog):
    caplog.set_level(logging.WARNING, logger="recordsync.errors")

    for _ in range(4):  # at 0, 1 and 2 s, then 200 s later
        post(api)

    assert len([r for r in caplog.records if r.getMessage() == "dependency unavailable"]) == 2


def test_a_page_outside_the_api_answers_the_same_503(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("django.contrib.sessions.backends.db.SessionStore.load", refuse)
    client.cookies["sessionid"] = "x" * 32

    answer = client.get("/admin/")

    assert answer.status_code == 503 and answer["Retry-After"] == "5"
    assert answer.json()["error"]["code"] == "service_unavailable"
