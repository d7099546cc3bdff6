"""Rules: where events go and with which fields, decided live from rows staff edit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rules import selectors
from rules.models import Rule
from rules.services import rule_set_replace
from sync.models import SyncEvent, SyncJob

pytestmark = pytest.mark.django_db

CONTACTS_WITH_EMAIL: dict[str, Any] = {
    "name": "contacts-with-email",
    "order": 10,
    "match_object_type": "contact",
    "match_operations": ["create", "update"],
    "condition": "data.email != null",
    "action": "sync",
    "targets": [
        {
            "target": "salesforce",
            "object": "Contact",
            "mapping": {
                "Email": "$lower(data.email)",
                "LastName": '$coalesce(data.last_name, "Unknown")',
                "Description": '$join(" ", [data.first_name, data.last_name])',
            },
        },
        {"target": "outreach", "object": "prospect", "mapping": {"emails": "[$lower(data.email)]"}},
    ],
}
SKIP_TEST_DELETES: dict[str, Any] = {
    "name": "skip-test-account-deletes",
    "order": 5,
    "match_object_type": "account",
    "match_operations": ["delete"],
    "condition": 'record_id =~ "^test-"',
    "action": "skip",
    "reason": "test accounts are never deleted in the CRMs",
}


def ingest(client: Any, **event: Any) -> dict[str, Any]:
    body = {
        "operation": "create",
        "record_id": "c-1",
        "object_type": "contact",
        "data": {"email": "Ada@Example.com", "first_name": "Ada", "last_name": "Lovelace"},
        **event,
    }
    response = client.post("/v1/sync/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    answer: dict[str, Any] = response.json()
    return answer


def put_rules(client: Any, *rules: dict[str, Any]) -> Any:
    return client.post("/v1/sync/rules", {"rules": list(rules)}, format="json")


@pytest.fixture
def demo_rules(staff_api, connections) -> None:
    assert put_rules(staff_api, CONTACTS_WITH_EMAIL, SKIP_TEST_DELETES).status_code == 200


def test_a_matching_rule_routes_the_event_with_its_mapped_fields(api, demo_rules):
    answer = ingest(api)

    assert [j["target"] for j in answer["jobs"]] == ["salesforce", "outreach"]
    routing = answer["routing"]
    assert routing["mode"] == "rules" and routing["matched"] == ["contacts-with-email"]
    assert routing["payloads"]["salesforce"]["fields"] == {
        "Email": "ada@example.com",
        "LastName": "Lovelace",
        "Description": "Ada Lovelace",
    }
    assert routing["payloads"]["outreach"] == {
        "object": "prospect",
        "fields": {"emails": ["ada@example.com"]},
        "conflict": "last_writer_wins",
        "merge_fallback": "last_writer_wins",
        "on_delete": "propagate",
        "rule": "contacts-with-email",
    }


def test_the_decision_is_shown_in_the_records_status(api, demo_rules):
    ingest(api)

    event = api.get("/v1/sync/status/c-1").json()["events"][0]

    assert event["routing"]["matched"] == ["contacts-with-email"]
    assert event["routing"]["payloads"]["salesforce"]["fields"]["Email"] == "ada@example.com"


def test_an_event_no_rule_matches_is_recorded_as_skipped_with_the_reason(api, demo_rules):
    answer = ingest(api, object_type="invoice", record_id="i-1")

    assert answer["jobs"] == []
    assert answer["routing"]["reason"] == "no rule matched"
    assert SyncEvent.objects.filter(record_id="i-1").exists()


def test_a_condition_that_does_not_hold_skips_the_event(api, demo_rules):
    answer = ingest(api, data={"first_name": "No email"})

    assert answer["jobs"] == [] and answer["routing"]["reason"] == "no rule matched"


def test_a_skip_rule_records_its_reason(api, demo_rules):
    answer = ingest(api, operation="delete", object_type="account", record_id="test-42", data=None)

    assert answer["routing"]["matched"] == ["skip-test-account-deletes"]
    assert answer["jobs"] == []


def test_a_stop_rule_ends_evaluation(api, staff_api, connections):
    stop = {
        "name": "vip-only-salesforce",
        "order": 1,
        "match_object_type": "contact",
        "condition": 'data.tier == "vip"',
        "action": "stop",
        "targets": [{"target": "salesforce", "object": "Contact"}],
    }
    put_rules(staff_api, stop, CONTACTS_WITH_EMAIL)

    vip = ingest(api, data={"email": "v@example.com", "tier": "vip"})
    other = ingest(api, record_id="c-2")

    assert vip["routing"]["matched"] == ["vip-only-salesforce"] and [j["target"] for j in vip["jobs"]] == ["salesforce"]
    assert vip["routing"]["payloads"]["salesforce"]["fields"] == {"email": "v@example.com", "tier": "vip"}
    assert [j["target"] for j in other["jobs"]] == ["salesforce", "outreach"]


def test_conditions_can_look_at_the_changed_fields(api, staff_api, connections):
    rule = {
        "name": "email-changes",
        "condition": '"email" in changed',
        "action": "sync",
        "targets": [{"target": "salesforce", "object": "Contact"}],
    }
    put_rules(staff_api, rule)

    first = ingest(api)
    same = ingest(api, operation="update", data={"email": "Ada@Example.com", "first_name": "Augusta"})
    moved = ingest(api, operation="update", data={"email": "ada@new.example.com"})

    assert [len(a["jobs"]) for a in (first, same, moved)] == [1, 0, 1]
    assert same["routing"]["reason"] == "no rule matched"


def test_a_target_ignoring_deletes_is_skipped_with_the_reason(api, staff_api, connections):
    rule = {
        "name": "no-deletes-to-outreach",
        "match_object_type": "contact",
        "targets": [
            {"target": "outreach", "object": "prospect", "on_delete": "ignore"},
            {"target": "salesforce", "object": "Contact"},
        ],
    }
    put_rules(staff_api, rule)

    answer = ingest(api, operation="delete", data=None)

    assert [j["target"] for j in answer["jobs"]] == ["salesforce"]
    assert answer["routing"]["skipped"] == [
        {"target": "outreach", "reason": "deletes are ignored for this target", "rule": "no-deletes-to-outreach"}
    ]


def test_a_mapping_that_fails_on_an_event_skips_that_target_and_says_why(api, staff_api, connections):
    mapping = {"Birthdate": '$format_date(data.born, "%Y-%m-%d")'}
    rule = {"name": "needs-a-date", "targets": [{"target": "salesforce", "object": "Contact", "mapping": mapping}]}
    put_rules(staff_api, rule)

    answer = ingest(api)

    assert answer["jobs"] == []
    assert answer["routing"]["skipped"][0]["reason"].startswith("mapping of Birthdate failed")


def test_named_targets_still_get_the_rules_mapping(api, demo_rules):
    answer = ingest(api, targets=["salesforce"])

    assert [j["target"] for j in answer["jobs"]] == ["salesforce"]
    assert answer["routing"]["payloads"]["salesforce"]["fields"]["Email"] == "ada@example.com"


def test_a_changed_rule_routes_the_next_event_without_a_restart(api, staff_api, demo_rules, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(selectors, "clock", lambda: now[0])
    before = ingest(api)
    only_outreach = {**CONTACTS_WITH_EMAIL, "targets": CONTACTS_WITH_EMAIL["targets"][1:]}
    assert staff_api.post("/v1/sync/rules", {"rule": only_outreach}, format="json").status_code == 200

    now[0] += selectors.VERSION_CHECK_SECONDS  # another process notices within this long
    after = ingest(api, record_id="c-2")

    assert [j["target"] for j in before["jobs"]] == ["salesforce", "outreach"]
    assert [j["target"] for j in after["jobs"]] == ["outreach"]
    assert after["routing"]["version"] == before["routing"]["version"] + 1


def test_without_rules_the_default_routing_applies(api, connections):
    assert ingest(api)["routing"]["mode"] == "default"


# --- the API ----------------------------------------------------------------------------------


def test_the_rule_set_is_listed_with_its_version(staff_api, demo_rules):
    body = staff_api.get("/v1/sync/rules").json()

    assert body["version"] == 1
    assert [r["name"] for r in body["results"]] == ["skip-test-account-deletes", "contacts-with-email"]


def test_rules_are_staff_only(api, connections):
    assert api.get("/v1/sync/rules").status_code == 403
    assert put_rules(api, CONTACTS_WITH_EMAIL).status_code == 403


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"condition": "data.email =="}, "rules[1].condition", "syntax error"),
        ({"condition": "opration == 'create'"}, "rules[1].condition", "did you mean 'operation'"),
        ({"targets": [{"target": "hubspot", "object": "contact"}]}, "rules[1].targets[0].target", "No connection"),
        (
            {"targets": [{"target": "outreach", "object": "prospect", "mapping": {"Emails": "data.email"}}]},
            "rules[1].targets[0].mapping.Emails",
            "Did you mean 'emails'",
        ),
        (
            {"targets": [{"target": "salesforce", "object": "Contact", "mapping": {"Email": "data.email +"}}]},
            "rules[1].targets[0].mapping.Email",
            "syntax error",
        ),
        (
            {"match_source": "salesforce", "targets": [{"target": "salesforce", "object": "Contact"}]},
            "rules[1].targets[0].target",
            "a loop",
        ),
        ({"action": "explode"}, "rules[1].action", ""),
        ({"name": "skip-test-account-deletes"}, "rules[1].name", "names must be unique"),
        ({"condition": "data.x == " + "1 + " * 400 + "1"}, "rules[1].condition", "the limit is 1000"),
    ],
)
def test_a_bad_rule_set_is_refused_whole_naming_the_rule_and_field(staff_api, demo_rules, change, field, says):
    version = staff_api.get("/v1/sync/rules").json()["version"]

    response = put_rules(staff_api, SKIP_TEST_DELETES, {**CONTACTS_WITH_EMAIL, **change})

    assert response.status_code == 400, response.content
    fields = {f["field"]: f["message"] for f in response.json()["error"]["fields"]}
    assert field in fields, fields
    assert says in fields[field]
    after = staff_api.get("/v1/sync/rules").json()
    assert after["version"] == version and len(after["results"]) == 2


def test_an_oversized_rule_set_is_refused(staff_api, connections):
    rules = [{**SKIP_TEST_DELETES, "name": f"r{i}"} for i in range(501)]

    response = put_rules(staff_api, *rules)

    assert response.status_code == 400
    assert "the limit is 500" in response.json()["error"]["message"]
    assert not Rule.objects.exists()


def test_one_rule_can_be_upserted_by_name(staff_api, demo_rules):
    changed = {**SKIP_TEST_DELETES, "reason": "kept for audits"}

    body = staff_api.post("/v1/sync/rules", {"rule": changed}, format="json").json()

    assert body["version"] == 2
    assert Rule.objects.get(name="skip-test-account-deletes").reason == "kept for audits"
    assert Rule.objects.count() == 2


def test_sending_both_or_neither_is_refused(staff_api, connections):
    assert staff_api.post("/v1/sync/rules", {}, format="json").status_code == 400


def test_rule_set_replace_keeps_history(connections):
    rule_set_replace(specs=[SKIP_TEST_DELETES], actor="ops")
    rule_set_replace(specs=[{**SKIP_TEST_DELETES, "reason": "changed"}], actor="ops")

    assert Rule.history.filter(name="skip-test-account-deletes").count() >= 2
    assert SyncJob.objects.count() == 0


def test_a_field_the_change_does_not_carry_is_left_out_but_an_explicit_null_is_sent(api, staff_api, connections):
    mapping = {"Email": "data.email", "FirstName": "data.first_name", "LeadSource": '"System A"'}
    put_rules(
        staff_api, {"name": "contacts", "targets": [{"target": "salesforce", "object": "Contact", "mapping": mapping}]}
    )

    partial = ingest(api, operation="update", data={"email": "ada@example.com"})
    cleared = ingest(api, operation="update", data={"email": "ada@example.com", "first_name": None})

    assert partial["routing"]["payloads"]["salesforce"]["fields"] == {
        "Email": "ada@example.com",
        "LeadSource": "System A",
    }
    assert cleared["routing"]["payloads"]["salesforce"]["fields"] == {
        "Email": "ada@example.com",
        "FirstName": None,
        "LeadSource": "System A",
    }


def test_a_condition_that_cannot_be_evaluated_on_an_event_is_recorded_not_a_500(api, staff_api, connections):
    rule = {
        "name": "vip-tags",
        "condition": '"vip" in data.tags',
        "targets": [{"target": "salesforce", "object": "Contact"}],
    }
    put_rules(staff_api, rule)

    answer = ingest(api)  # this contact has no tags

    assert answer["jobs"] == [] and answer["routing"]["reason"] == "no rule matched"
    assert answer["routing"]["errors"][0]["rule"] == "vip-tags"
    assert answer["routing"]["errors"][0]["message"].startswith("condition: ")
