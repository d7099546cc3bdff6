"""The mock System A as the rest of the service sees it (crms.mocks.declare)."""

from __future__ import annotations

from crms.mocks.declare import DemoConnection, Mock
from crms.systema import mock


def _demo(base_url: str) -> DemoConnection:
    return DemoConnection(config={"url": base_url}, secrets={"signing_secret": mock.signing_secret()})


MOCK = Mock(
    urls="crms.systema.mock_urls",
    staff_push=mock.staff_push,
    as_row=mock.as_row,
    demo=_demo,
    secrets=("MOCK_SYSTEM_A_SIGNING_SECRET",),
)
