"""Rules in the admin: validation with positions, the version stamp, history with revert, the dry run."""

from __future__ import annotations

import json

import pytest

from rules.models import Rule
from rules.selectors import rule_set_version
from rules.services import rule_set_replace
from tests.rules.test_rules import CONTACTS_WITH_EMAIL, SKIP_TEST_DELETES

pytestmark = pytest.mark.django_db
ADD = "/admin/rules/rule/add/"


def form(**changes: object) -> dict[str, object]:
    targets = json.dumps([{"target": "salesforce", "object": "Contact"}])
    base = {
        "name": "vip",
        "enabled": "on",
        "order": 1,
        "description": "",
        "match_source": "",
        "match_object_type": "contact",
        "match_operations": "[]",
        "condition": 'data.tier == "vip"',
        "action": "sync",
        "reason": "",
        "targets": targets,
    }
    return {**base, **changes}


def test_adding_a_rule_in_the_admin_bumps_the_version(admin_client, connections):
    response = admin_client.post(ADD, form())

    assert response.status_code == 302, response.content.decode()[:3000]
    assert Rule.objects.get().name == "vip"
    assert rule_set_version() == 1


def test_a_syntax_error_is_shown_with_its_position(admin_client, connections):
    response = admin_client.post(ADD, form(condition='data.tier == "vip" and'))

    page = response.content.decode()
    assert response.status_code == 200
    assert "condition: syntax error" in page
    assert not Rule.objects.exists() and rule_set_version() == 0


def test_an_unknown_name_is_shown_with_a_suggestion(admin_client, connections):
    page = admin_client.post(ADD, form(condition='sorce == "x"')).content.decode()

    assert "unknown name &#x27;sorce&#x27; (did you mean &#x27;source&#x27;?)" in page


def test_an_unknown_target_field_is_named(admin_client, connections):
    targets = json.dumps([{"target": "outreach", "object": "prospect", "mapping": {"emial": "data.email"}}])

    page = admin_client.post(ADD, form(targets=targets)).content.decode()

    assert "targets[0].mapping.emial: Unknown field" in page


def test_history_keeps_each_change_and_a_revert_bumps_the_version(admin_client, connections):
    rule_set_replace(specs=[SKIP_TEST_DELETES], actor="ops")
    rule = Rule.objects.get()
    admin_client.post(
        f"/admin/rules/rule/{rule.pk}/change/",
        form(
            name=rule.name,
            match_object_type="account",
            match_operations='["delete"]',
            action="skip",
            reason="changed",
            condition=SKIP_TEST_DELETES["condition"],
            targets="[]",
            order=5,
        ),
    )
    assert Rule.objects.get().reason == "changed"
    first = rule.history.order_by("history_date").first()
    assert first is not None
    version_before = rule_set_version()

    page = admin_client.get(f"/admin/rules/rule/{rule.pk}/history/{first.history_id}/")
    original = form(
        name=rule.name,
        match_object_type="account",
        match_operations='["delete"]',
        action="skip",
        reason=SKIP_TEST_DELETES["reason"],
        condition=SKIP_TEST_DELETES["condition"],
        targets="[]",
        order=5,
    )
    reverted = admin_client.post(page.wsgi_request.path, original)

    assert reverted.status_code == 302
    assert Rule.objects.get().reason == SKIP_TEST_DELETES["reason"]
    assert rule_set_version() == version_before + 1
    assert rule.history.count() >= 3


def test_the_dry_run_page_shows_where_an_event_would_go_and_writes_nothing(admin_client, connections):
    rule_set_replace(specs=[CONTACTS_WITH_EMAIL], actor="ops")
    event = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": {"email": "A@B.example"}}

    page = admin_client.post("/admin/rules/rule/test/", {"event": json.dumps(event)}).content.decode()

    assert "contacts-with-email" in page
    assert "salesforce, outreach" in page
    assert "a@b.example" in page
    from sync.models import SyncEvent

    assert not SyncEvent.objects.exists()


def test_the_dry_run_can_try_a_draft_rule_set(admin_client, connections):
    rule_set_replace(specs=[CONTACTS_WITH_EMAIL], actor="ops")
    draft = [{**CONTACTS_WITH_EMAIL, "targets": CONTACTS_WITH_EMAIL["targets"][:1]}]
    event = {"operation": "create", "record_id": "c-1", "object_type": "contact", "data": {"email": "a@b.example"}}

    page = admin_client.post("/admin/rules/rule/test/", {"event": json.dumps(event), "draft": json.dumps(draft)})

    body = page.content.decode()
    assert "<td>salesforce</td>" in body
    assert Rule.objects.get().targets == CONTACTS_WITH_EMAIL["targets"]  # the saved rules are untouched


def test_a_bad_draft_is_refused_with_its_errors(admin_client, connections):
    draft = [{"name": "x", "condition": "data.a ==", "targets": [{"target": "salesforce"}]}]
    body = admin_client.post("/admin/rules/rule/test/", {"recent": 5, "draft": json.dumps(draft)}).content.decode()

    assert "rules[0].condition: syntax error" in body
