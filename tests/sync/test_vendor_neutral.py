"""The pipeline names no vendor (issue 16): what the engine, backfill and polling need to know about a CRM, its
connector says through crms/base.py. A vendor's name creeping back into them fails here."""

from __future__ import annotations

import re
from pathlib import Path

from crms.base import BulkWriter, NotSent
from crms.registry import CONNECTORS, connector_class
from sync.delivery.throttle import Throttled, ThrottleUnavailable

ROOT = Path(__file__).parents[2]
# Every module of delivery (the engine, dispatch, throttle) and inbound (polling, backfill, reconcile).
PIPELINE = sorted(str(p.relative_to(ROOT)) for d in ("sync/delivery", "sync/inbound") for p in (ROOT / d).glob("*.py"))
# The CRMs among the connectors (their labels, e.g. "Salesforce"), and the words only their APIs use.
VENDOR_WORDS = ["soql", "sobject", "hubspot"]


def vendors() -> list[str]:
    internal = {"database", "flatfile", "system_a"}
    return [connector_class(kind).label.lower() for kind in CONNECTORS if kind not in internal] + VENDOR_WORDS


def test_the_engine_backfill_and_polling_name_no_vendor() -> None:
    found = []
    for name in PIPELINE:
        for number, line in enumerate((ROOT / name).read_text().splitlines(), start=1):
            found += [f"{name}:{number}: {word}" for word in vendors() if re.search(word, line, re.IGNORECASE)]
    assert found == []
    assert {"salesforce", "outreach"} <= set(vendors())
    assert {"sync/delivery/engine.py", "sync/inbound/backfill.py", "sync/inbound/changes.py"} <= set(PIPELINE)


def test_bulk_writing_is_a_capability_a_connector_declares() -> None:
    writers = {kind for kind in CONNECTORS if issubclass(connector_class(kind), BulkWriter)}
    assert writers == {"salesforce"}
    assert connector_class("salesforce").bulk_threshold({}) == 2000  # type: ignore[attr-defined]
    assert connector_class("salesforce").bulk_threshold({"bulk_threshold": 5000}) == 5000  # type: ignore[attr-defined]


def test_calls_held_back_on_our_side_are_not_sent_errors_whoever_raises_them() -> None:
    assert issubclass(Throttled, NotSent) and issubclass(ThrottleUnavailable, NotSent)
    per_record = {kind for kind in CONNECTORS if connector_class(kind).capabilities.calls_per_record}
    assert per_record == {"outreach", "system_a"}
