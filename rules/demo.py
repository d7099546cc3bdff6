"""The readable demo rule set `make run` loads (docs/rules.md walks through it)."""

from __future__ import annotations

from typing import Any

DEMO_RULES: list[dict[str, Any]] = [
    {
        "name": "skip-test-account-deletes",
        "order": 5,
        "description": "Accounts whose id starts with test- are never deleted in the CRMs.",
        "match_source": "system_a",
        "match_object_type": "account",
        "match_operations": ["delete"],
        "condition": 'record_id =~ "^test-"',
        "action": "skip",
        "reason": "test accounts are never deleted in the CRMs",
    },
    {
        "name": "contacts-with-email",
        "order": 10,
        "description": "Contacts with an email go to Salesforce (as Contact) and Outreach (as prospect).",
        "match_source": "system_a",
        "match_object_type": "contact",
        "match_operations": ["create", "update", "delete"],
        "condition": 'operation == "delete" or data.email != null',
        "action": "sync",
        "targets": [
            {
                "target": "salesforce",
                "object": "Contact",
                "mapping": {
                    "Email": "$lower(data.email)",
                    "FirstName": "data.first_name",
                    "LastName": 'operation == "create" ? $coalesce(data.last_name, "Unknown") : data.last_name',
                    "Phone": "data.phone",
                },
            },
            {
                "target": "outreach",
                "object": "prospect",
                "mapping": {
                    "emails": "[$lower(data.email)]",
                    "firstName": "data.first_name",
                    "lastName": "data.last_name",
                },
            },
        ],
    },
    {
        "name": "accounts",
        "order": 20,
        "description": "Accounts go to Salesforce (Account) and Outreach (account, matched on domain).",
        "match_source": "system_a",
        "match_object_type": "account",
        "action": "sync",
        "targets": [
            {"target": "salesforce", "object": "Account", "mapping": {"Name": "data.name", "Website": "data.domain"}},
            {"target": "outreach", "object": "account", "mapping": {"name": "data.name", "domain": "data.domain"}},
        ],
    },
    {
        "name": "contacts-from-salesforce",
        "order": 30,
        "description": "Contacts changed in Salesforce come back to System A.",
        "match_source": "salesforce",
        "match_object_type": "Contact",
        "action": "sync",
        "targets": [
            {
                "target": "system_a",
                "object": "contact",
                "mapping": {"email": "data.Email", "first_name": "data.FirstName", "last_name": "data.LastName"},
            }
        ],
    },
    {
        "name": "prospects-from-outreach",
        "order": 40,
        "description": "Prospects changed in Outreach come back to System A.",
        "match_source": "outreach",
        "match_object_type": "prospect",
        "action": "sync",
        "targets": [
            {
                "target": "system_a",
                "object": "contact",
                "mapping": {"email": "data.emails[0]", "first_name": "data.firstName", "last_name": "data.lastName"},
            }
        ],
    },
]
