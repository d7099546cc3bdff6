"""crms/outreach/reference.json is what Outreach's own reference says, derived again from it here."""

from __future__ import annotations

import json
import re

from crms.outreach import reference
from crms.outreach.resources import ACCOUNT_FIELDS, PROSPECT_FIELDS
from tests.crms.outreach import contract


def test_the_stored_table_is_the_one_derived_from_outreachs_reference():
    derived = reference.derive(contract.published())

    assert json.loads(reference.STORED.read_text()) == derived
    assert reference.STORED.read_text() == reference.dump(derived)  # written by the module, one row a line


def test_the_badges_become_flags_and_the_relationship_texts_become_filters():
    prospect, account = reference.resource("prospect"), reference.resource("account")

    assert len(prospect.attributes) == 230 and len(account.attributes) == 172
    assert (prospect.attributes["updatedAt"].readonly, prospect.attributes["updatedAt"].filterable) == (True, True)
    assert prospect.attributes["emails"].filterable and not prospect.attributes["emails"].sortable
    assert (account.attributes["numberOfEmployees"].kind, prospect.attributes["dateOfBirth"].kind) == (
        "integer",
        "date",
    )
    assert prospect.relationships["account"].filter_by == ("id", "customId", "name", "named", "updatedAt")
    assert prospect.relationships["creator"].filter_by == () and prospect.relationships["creator"].readonly
    assert prospect.relationships["opportunities"].collection == "/opportunities"
    assert (account.relationships["prospects"].many, account.relationships["owner"].many) == (True, False)


def test_the_connector_writes_the_attributes_the_reference_does_not_mark_read_only():
    published = contract.published()["components"]["schemas"]
    for kind, declared in (("prospect", PROSPECT_FIELDS), ("account", ACCOUNT_FIELDS)):
        writable = [
            name
            for name, spec in published[kind]["properties"].items()
            if "badges/readonly" not in spec.get("description", "") and not re.fullmatch(r"custom\d+", name)
        ]
        assert list(declared) == writable
