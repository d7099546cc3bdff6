"""What a vendor package declares about its local mock, so that nothing outside the package names it.

The URLconf, the staff API (/v1/crms/mock/{kind}/…), `load_demo` and the docs read these
declarations through `crms.registry.mocks()`; adding a CRM with a mock touches its own package and
its one registry line (docs/adding-a-connector.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from crms.mocks.models import MockRecord
from recordsync.env import env_int, env_str

Row = dict[str, Any]


@dataclass(frozen=True)
class DemoConnection:
    """The connection `make run` creates on the mock: non-secret config and the secrets."""

    config: dict[str, Any]
    secrets: dict[str, Any]


@dataclass(frozen=True)
class Mock:
    # A dotted URLconf module, served under /mock/<kind>/ (404 unless MOCK_CRMS_ENABLED).
    urls: str
    # Change the mock's records as the vendor's own users would: (object, rows, ids to delete) -> rows stored.
    staff_push: Callable[[str, list[Row], list[str]], list[Row]]
    # A stored record as the vendor's API shows it.
    as_row: Callable[[MockRecord], Row]
    # The demo connection, given the mock's base URL (e.g. http://127.0.0.1:8000/mock/outreach).
    demo: Callable[[str], DemoConnection]
    # A step after the demo connection was created here (given the service's base URL): what it did, or "".
    demo_after: Callable[[str], str] | None = None
    # Demo rules that send records to this kind, loaded with the demo rule set when no rules exist.
    demo_rules: list[dict[str, Any]] = field(default_factory=list)
    # The mock's secret settings (mock_setting names): `make run` writes a random value of each into .env, so a
    # local mock never runs on its well-known default (manage.py mock_env).
    secrets: tuple[str, ...] = ()


def mock_setting(name: str, default: str) -> str:
    """A mock's own setting: a Django setting when one is set (tests override them), else the environment.

    The mocks' settings live beside each mock, not in recordsync/settings.py, so that adding a mock
    does not edit the settings module; `make run` still writes them to .env.
    """
    value = getattr(settings, name, None)
    return str(value) if value is not None else env_str(name, default)


def mock_setting_int(name: str, default: int) -> int:
    value = getattr(settings, name, None)
    return int(value) if value is not None else env_int(name, default, minimum=1)
