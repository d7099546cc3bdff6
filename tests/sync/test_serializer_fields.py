"""EventInSerializer binds its fields once per thread (ReusedFieldsSerializer): the speed must not cost isolation."""

from __future__ import annotations

import threading
from typing import Any

from sync.api.serializers import EventBatchInSerializer, EventInSerializer

GOOD = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": {"email": "a@example.com"}}


def test_serializers_in_one_thread_share_fields_yet_each_keeps_its_own_data_and_errors():
    bad = EventInSerializer(data={**GOOD, "object_type": "9 nope", "occurred_at": "yesterday"})
    good = EventInSerializer(data={**GOOD, "record_id": "c-2"})

    assert not bad.is_valid()
    assert good.is_valid(), good.errors
    assert bad.fields["object_type"] is good.fields["object_type"]  # not copied again
    assert good.fields["object_type"].parent is good  # pointed at the serializer in use
    assert sorted(bad.errors) == ["object_type", "occurred_at"]
    assert good.validated_data["record_id"] == "c-2" and good.errors == {}
    assert bad.fields["object_type"].field_name == "object_type" and bad.fields["object_type"].source == "object_type"


def test_another_thread_gets_fields_of_its_own():
    here = dict(EventInSerializer(data=GOOD).fields.items())
    there: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: there.update(EventInSerializer(data=GOOD).fields.items()))
    thread.start()
    thread.join()

    assert set(here) == set(there)
    assert all(here[name] is not there[name] for name in here)


def test_threads_validating_at_once_each_get_their_own_answer():
    start = threading.Barrier(4)
    answers: dict[int, Any] = {}

    def validate(n: int) -> None:
        start.wait()
        for round_ in range(200):
            body = {**GOOD, "record_id": f"r-{n}-{round_}"} if n % 2 else {**GOOD, "operation": f"bad-{n}"}
            serializer = EventInSerializer(data=body)
            ok = serializer.is_valid()
            answers[n] = (ok, serializer.validated_data.get("record_id") if ok else sorted(serializer.errors))
            if ok != bool(n % 2):
                answers[n] = ("wrong", round_)
                return

    threads = [threading.Thread(target=validate, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == {0: (False, ["operation"]), 1: (True, "r-1-199"), 2: (False, ["operation"]), 3: (True, "r-3-199")}


def test_a_list_names_its_bad_item_and_a_single_event_after_it_is_unaffected():
    batch = EventBatchInSerializer(data=[GOOD, {**GOOD, "record_id": ""}, GOOD])
    single = EventInSerializer(data=GOOD)

    assert not batch.is_valid()
    errors: Any = batch.errors  # a dict by index here, whatever the stubs say
    assert errors == {1: {"record_id": ["This field may not be blank."]}}  # only the bad item, by index
    assert single.is_valid(), single.errors
