"""Demo data for `make run`: connections pointing at the local mock CRMs. Safe to run twice."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from crms.models import Connection
from crms.services import connection_save


def _mock_url(system: str) -> str:
    return f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/mock/{system}"


def _salesforce() -> dict[str, Any]:
    return {
        "config": {
            "login_url": _mock_url("salesforce"),
            "instance_url": _mock_url("salesforce"),
            "auth": "client_credentials",
            "client_id": settings.MOCK_SALESFORCE_CLIENT_ID,
            "external_id_field": "RecordSync_Id__c",
        },
        "secrets": {"client_secret": settings.MOCK_SALESFORCE_CLIENT_SECRET},
    }


def _system_a() -> dict[str, Any]:
    return {
        "config": {"url": _mock_url("system_a")},
        "secrets": {"signing_secret": settings.MOCK_SYSTEM_A_SIGNING_SECRET},
    }


def _outreach() -> dict[str, Any]:
    return {
        "config": {
            "client_id": settings.MOCK_OUTREACH_CLIENT_ID,
            "api_url": f"{_mock_url('outreach')}/api/v2",
            "token_url": f"{_mock_url('outreach')}/oauth/token",
        },
        "secrets": {
            "client_secret": settings.MOCK_OUTREACH_CLIENT_SECRET,
            "refresh_token": settings.MOCK_OUTREACH_REFRESH_TOKEN,
        },
    }


DEMO = {"salesforce": _salesforce, "outreach": _outreach, "system_a": _system_a}


class Command(BaseCommand):
    help = "Create the demo connections (salesforce, outreach, system_a) on the local mocks, if missing."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, build in DEMO.items():
            existing = Connection.objects.filter(name=name).first()
            if existing is not None and existing.config:
                self.stdout.write(f"kept connection {name}")
                continue
            connection_save(name=name, kind=name, **build())
            self.stdout.write(f"created connection {name} (local mock)")
