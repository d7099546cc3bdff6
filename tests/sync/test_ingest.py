"""POST /v1/sync/: accepted events, every refusal, idempotency and batches."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from sync.models import JobState, SyncEvent, SyncJob

pytestmark = pytest.mark.django_db

URL = "/v1/sync/"


def post(client: Any, body: Any, **headers: str) -> Any:
    return client.post(URL, data=json.dumps(body), content_type="application/json", **headers)


def fields(response: Any) -> dict[str, str]:
    return {f["field"]: f["message"] for f in response.json()["error"]["fields"]}


def test_it_accepts_a_create_and_opens_a_pending_job_for_every_other_connection(api, connections, event):
    response = post(api, event)

    assert response.status_code == 202
    body = response.json()
    assert body["record_id"] == "c-1"
    assert body["jobs"] == [{"target": "outreach", "state": "pending"}, {"target": "salesforce", "state": "pending"}]
    assert body["routing"] == {"mode": "default", "targets": ["outreach", "salesforce"]}
    assert body["status_url"] == "/v1/sync/status/c-1?object_type=contact&source=system_a"
    stored = SyncEvent.objects.get()
    assert str(stored.id) == body["event_id"]
    assert stored.payload == event["data"]
    assert stored.routing["mode"] == "default"
    assert SyncJob.objects.filter(state=JobState.PENDING).count() == 2


def test_it_sends_only_to_the_targets_named(api, connections, event):
    response = post(api, {**event, "targets": ["salesforce"]})

    assert response.status_code == 202
    assert response.json()["jobs"] == [{"target": "salesforce", "state": "pending"}]
    assert response.json()["routing"] == {"mode": "explicit", "targets": ["salesforce"]}


def test_it_records_why_an_event_went_nowhere_when_no_connection_exists(api, event):
    response = post(api, event)

    assert response.status_code == 202
    assert response.json()["jobs"] == []
    assert response.json()["routing"]["reason"] == "no enabled connection other than the source"


def test_it_leaves_disabled_connections_out_of_default_routing(api, connections, event):
    connections["outreach"].enabled = False
    connections["outreach"].save()

    assert post(api, event).json()["jobs"] == [{"target": "salesforce", "state": "pending"}]


def test_a_delete_needs_no_data(api, connections):
    response = post(api, {"operation": "delete", "record_id": "c-9", "object_type": "contact"})

    assert response.status_code == 202
    assert SyncEvent.objects.get().payload is None


def test_a_read_is_recorded_without_jobs_and_says_why(api, connections):
    response = post(api, {"operation": "read", "record_id": "c-1", "object_type": "contact"})

    assert response.status_code == 202
    assert response.json()["jobs"] == []
    assert response.json()["routing"]["mode"] == "read"
    assert SyncJob.objects.count() == 0


def test_an_inbound_event_from_a_crm_is_not_routed_back_to_it(api, connections, event):
    response = post(api, {**event, "source": "salesforce"})

    assert [j["target"] for j in response.json()["jobs"]] == ["outreach", "system_a"]


def test_a_second_change_bumps_the_same_job_instead_of_adding_one(api, connections, event):
    post(api, event)
    post(api, {**event, "operation": "update", "data": {"email": "ada@new.example.com"}})

    job = SyncJob.objects.get(target__name="salesforce")
    assert job.version == 2
    assert job.state == JobState.PENDING
    assert job.last_event is not None and job.last_event.payload == {"email": "ada@new.example.com"}


def test_an_older_change_arriving_late_does_not_become_the_jobs_latest(api, connections, event):
    now = timezone.now()
    newer = post(api, {**event, "occurred_at": now.isoformat(), "data": {"email": "new@example.com"}})
    SyncJob.objects.update(state=JobState.SYNCED)
    late = post(
        api, {**event, "occurred_at": (now - timedelta(hours=1)).isoformat(), "data": {"email": "old@example.com"}}
    )

    job = SyncJob.objects.get(target__name="salesforce")
    assert str(job.last_event_id) == newer.json()["event_id"]
    # Superseded: recorded, answered as such, and nothing is sent again (no new version, job left synced).
    assert job.version == 1 and job.state == JobState.SYNCED
    assert {j["state"] for j in late.json()["jobs"]} == {"superseded"}
    assert SyncEvent.objects.filter(id=late.json()["event_id"]).exists()


# --- refusals: every one names the field --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "hint"),
    [
        ({"operation": "upsert"}, "operation", "use create, read, update or delete"),
        ({"operation": None}, "operation", ""),
        ({"record_id": None}, "record_id", ""),
        ({"record_id": ""}, "record_id", ""),
        ({"object_type": "has space"}, "object_type", "e.g. contact"),
        ({"data": ["not", "an", "object"]}, "data", ""),
        ({"data": None}, "data", "Required for create"),
        ({"targets": "salesforce"}, "targets", ""),
        ({"targets": ["nope"]}, "targets[0]", "Unknown target 'nope'"),
        ({"targets": ["salesforce", "system_a"]}, "targets[1]", "is the event's source"),
        ({"source": "Not A Slug"}, "source", "connection name"),
        ({"source": "hubspot"}, "source", "Unknown source 'hubspot'"),
        ({"occurred_at": "yesterday"}, "occurred_at", ""),
        ({"occurred_at": "2026-01-31T09:30:00"}, "occurred_at", "Add a UTC offset"),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, "occurred_at", "in the future"),
        ({"dta": {"email": "x"}}, "dta", "Unknown field"),
    ],
)
def test_it_refuses_bad_input_naming_the_field(api, connections, event, change, field, hint):
    response = post(api, {**event, **change})

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert field in fields(response), fields(response)
    assert hint in fields(response)[field]
    assert SyncEvent.objects.count() == 0


def test_it_refuses_a_missing_record_id(api, connections, event):
    del event["record_id"]

    response = post(api, event)

    assert response.status_code == 400
    assert fields(response)["record_id"] == "This field is required."


def test_it_refuses_a_disabled_target(api, connections, event):
    Connection = type(connections["outreach"])
    Connection.objects.filter(name="outreach").update(enabled=False)

    response = post(api, {**event, "targets": ["outreach"]})

    assert response.status_code == 400
    assert "disabled" in fields(response)["targets[0]"]


def test_malformed_json_is_a_400_not_a_500(api, connections):
    response = api.post(URL, data='{"operation": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_a_body_that_is_not_json_is_415(api, connections):
    response = api.post(URL, data="operation=create", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@override_settings(INGEST_MAX_BODY_BYTES=2048)
def test_a_body_over_the_limit_is_413(api, connections, event):
    response = post(api, {**event, "data": {"notes": "x" * 4096}})

    assert response.status_code == 413
    assert "limit is 2048 bytes" in response.json()["error"]["message"]
    assert SyncEvent.objects.count() == 0


def test_a_body_over_the_default_limit_is_413_too(api, connections, event):
    response = post(api, {**event, "data": {"notes": "x" * (6 * 1024 * 1024)}})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert SyncEvent.objects.count() == 0


def test_without_a_token_it_is_401(anon, connections, event):
    response = post(anon, event)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["request_id"] == response["X-Request-ID"]


def test_a_wrong_token_is_401(anon, connections, event):
    anon.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)

    assert post(anon, event).status_code == 401


def test_an_unknown_v1_path_answers_in_the_error_shape(api):
    response = api.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- idempotency ----------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_returns_the_first_answer_and_stores_nothing(api, connections, event):
    first = post(api, event, HTTP_IDEMPOTENCY_KEY="key-1")
    again = post(api, event, HTTP_IDEMPOTENCY_KEY="key-1")

    assert again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert SyncEvent.objects.count() == 1
    assert SyncJob.objects.get(target__name="salesforce").version == 1


def test_the_same_key_with_another_body_is_409(api, connections, event):
    post(api, event, HTTP_IDEMPOTENCY_KEY="key-1")

    response = post(api, {**event, "data": {"email": "other@example.com"}}, HTTP_IDEMPOTENCY_KEY="key-1")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert SyncEvent.objects.count() == 1


def test_an_event_id_in_the_body_works_as_the_key(api, connections, event):
    post(api, {**event, "event_id": "evt-1"})
    again = post(api, {**event, "event_id": "evt-1"})

    assert again["Idempotent-Replayed"] == "true"
    assert SyncEvent.objects.count() == 1


def test_events_without_a_key_are_each_stored(api, connections, event):
    post(api, event)
    post(api, event)

    assert SyncEvent.objects.count() == 2


def test_an_overlong_idempotency_key_is_refused(api, connections, event):
    response = post(api, event, HTTP_IDEMPOTENCY_KEY="k" * 201)

    assert response.status_code == 400
    assert "Idempotency-Key" in fields(response)


# --- batches --------------------------------------------------------------------------------------


def batch(n: int) -> list[dict[str, Any]]:
    return [
        {"operation": "create", "record_id": f"c-{i}", "object_type": "contact", "data": {"email": f"u{i}@example.com"}}
        for i in range(n)
    ]


def test_a_list_is_accepted_with_one_answer_per_item(api, connections):
    response = post(api, batch(3))

    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["record_id"] for r in results] == ["c-0", "c-1", "c-2"]
    assert SyncEvent.objects.count() == 3
    assert SyncJob.objects.count() == 6


def test_one_bad_item_refuses_the_whole_list_naming_its_index(api, connections):
    items = batch(5)
    items[3]["operation"] = "explode"
    items[4]["targets"] = ["nowhere"]

    response = post(api, items)

    assert response.status_code == 400
    assert "[3].operation" in fields(response)
    assert SyncEvent.objects.count() == 0


def test_an_unknown_target_in_a_list_is_named_by_index(api, connections):
    items = batch(2)
    items[1]["targets"] = ["salesforce", "nowhere"]

    response = post(api, items)

    assert response.status_code == 400
    assert list(fields(response)) == ["[1].targets[1]"]
    assert SyncEvent.objects.count() == 0


def test_a_list_over_500_is_refused(api, connections):
    response = post(api, batch(501))

    assert response.status_code == 400
    assert "At most 500" in fields(response)["body"]


def test_an_empty_list_is_refused(api, connections):
    assert post(api, []).status_code == 400


def test_two_items_with_one_event_id_are_refused(api, connections):
    items = batch(2)
    items[0]["event_id"] = items[1]["event_id"] = "same"

    response = post(api, items)

    assert response.status_code == 400
    assert "[1].event_id" in fields(response)


def test_changes_to_one_record_in_one_list_become_one_job(api, connections):
    items = batch(1) * 1 + [{**batch(1)[0], "operation": "update", "data": {"email": "late@example.com"}}]

    post(api, items)

    job = SyncJob.objects.get(target__name="salesforce")
    assert job.version == 2
    assert job.last_event is not None and job.last_event.payload == {"email": "late@example.com"}


def test_a_repeated_list_with_a_header_key_is_replayed(api, connections):
    first = post(api, batch(3), HTTP_IDEMPOTENCY_KEY="batch-1")
    again = post(api, batch(3), HTTP_IDEMPOTENCY_KEY="batch-1")

    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert SyncEvent.objects.count() == 3


def test_a_reused_key_in_a_list_is_409_naming_the_item(api, connections):
    post(api, batch(2), HTTP_IDEMPOTENCY_KEY="batch-1")
    changed = batch(2)
    changed[1]["data"] = {"email": "changed@example.com"}

    response = post(api, changed, HTTP_IDEMPOTENCY_KEY="batch-1")

    assert response.status_code == 409
    assert list(fields(response)) == ["[1].event_id"]


@pytest.mark.parametrize("keyed", [False, True], ids=["server-made keys", "client keys"])
def test_a_large_list_stores_every_event_exactly_as_sent(api, connections, keyed):
    items = batch(30)  # large enough for PostgreSQL's COPY path
    headers = {"HTTP_IDEMPOTENCY_KEY": "list-1"} if keyed else {}

    results = post(api, items, **headers).json()["results"]

    stored = {str(e.id): e for e in SyncEvent.objects.all()}
    assert len(stored) == 30
    for item, answer in zip(items, results, strict=True):
        event = stored[answer["event_id"]]
        assert (event.record_id, event.payload, event.routing["mode"]) == (item["record_id"], item["data"], "default")
        # Only an answer that can be replayed (the client sent a key) is kept.
        assert event.response == (answer if keyed else {})
    assert SyncJob.objects.filter(state=JobState.PENDING).count() == 60


def test_event_ids_and_made_up_keys_are_time_ordered_in_the_order_accepted(api, connections, event):
    """UUIDv7 (RFC 9562): each accepted event's id, and the idempotency key made up for it, sort after the
    last one's, so their B-trees grow at one end instead of at a random page of a large index."""
    single = [post(api, {**event, "record_id": f"c-{n}"}).json()["event_id"] for n in range(3)]
    batch = post(api, [{**event, "record_id": f"b-{n}"} for n in range(3)]).json()
    ids = [*single, *(item["event_id"] for item in batch["results"])]

    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 6
    keys = list(SyncEvent.objects.order_by("received_at", "id").values_list("idempotency_key", flat=True))
    assert all(key.startswith("auto:") for key in keys) and keys == sorted(keys)


def test_event_ids_made_in_forked_workers_never_collide():
    """gunicorn and the cluster fork their workers from a parent that has already made ids: a generator whose
    random state were copied into each child would give two workers the same ids in the same millisecond, and
    a made-up `auto:` key is never looked up before its insert."""
    import os

    from uuid_utils.compat import uuid7

    uuid7()  # the parent's state, before the fork
    children = []
    for _ in range(4):
        reader, writer = os.pipe()  # one pipe each: writes of more than PIPE_BUF from several could interleave
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its pipe
            os.close(reader)
            os.write(writer, "".join(f"{uuid7()}\n" for _ in range(500)).encode())
            os._exit(0)
        os.close(writer)
        children.append((pid, reader))
    ids: list[str] = []
    for pid, reader in children:
        with os.fdopen(reader) as made:
            ids += made.read().split()
        os.waitpid(pid, 0)

    assert len(ids) == 2000
    assert len({i[14:] for i in ids}) == 2000  # not even the random part repeats
