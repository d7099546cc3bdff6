"""GET /metrics: refused without the token or an allowed network; counters count what happened;
gauges come from the database; counters of several processes add up in multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from crms.models import Connection
from recordsync.scrape import registry_for_scrape
from tests.conftest import drain, mock_salesforce

pytestmark = pytest.mark.django_db(transaction=True)


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def scrape(client: Any, **headers: str) -> Any:
    return client.get("/metrics", **headers)


def test_metrics_are_refused_outside_the_allowed_networks_without_the_token(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    settings.METRICS_TOKEN = "scrape-secret"

    refused = scrape(client)
    wrong = scrape(client, HTTP_AUTHORIZATION="Bearer nope")
    allowed = scrape(client, HTTP_AUTHORIZATION="Bearer scrape-secret")

    assert refused.status_code == wrong.status_code == 403
    assert refused.json()["error"]["fields"][0]["field"] == "Authorization"
    assert allowed.status_code == 200 and allowed["Content-Type"].startswith("text/plain")


def test_production_answers_the_token_only_even_from_loopback(tmp_path):
    """Issue 15: /metrics trusted loopback, which behind a same-host proxy is everyone."""
    from tests.recordsync.test_platform import _manage

    code = "from django.conf import settings; print(settings.METRICS_ALLOWED_NETWORKS)"
    shown = _manage(
        "shell", "--no-imports", "-c", code, DEBUG="0", SECRET_KEY="p" * 50, RECORDSYNC_VAR_DIR=str(tmp_path)
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "[]"


def test_counters_and_database_gauges_follow_what_happened(client, api, live_server):
    salesforce = mock_salesforce(live_server.url)
    before = (
        REGISTRY.get_sample_value("recordsync_events_accepted_total", {"source": "system_a", "operation": "create"})
        or 0
    )
    calls_before = (
        REGISTRY.get_sample_value("recordsync_crm_calls_total", {"connection": "salesforce", "outcome": "2xx"}) or 0
    )
    for n in range(3):
        body = {
            "operation": "create",
            "record_id": f"c-{n}",
            "object_type": "Contact",
            "data": {"LastName": f"L{n}", "Email": f"c{n}@example.com"},
        }
        assert api.post("/v1/sync/", data=json.dumps(body), content_type="application/json").status_code == 202
    pending = scrape(client).content.decode()
    drain(salesforce)
    text = scrape(client).content.decode()

    assert sample(text, "recordsync_events_accepted_total", source="system_a", operation="create") == before + 3
    assert sample(pending, "recordsync_jobs", state="pending", target="salesforce") == 3
    assert (sample(pending, "recordsync_lag_seconds", connection="salesforce") or -1) >= 0
    assert sample(text, "recordsync_jobs", state="synced", target="salesforce") == 3
    assert sample(text, "recordsync_lag_seconds", connection="salesforce") is None  # nothing due any more
    assert (sample(text, "recordsync_crm_calls_total", connection="salesforce", outcome="2xx") or 0) > calls_before
    assert (sample(text, "recordsync_crm_call_seconds_count", connection="salesforce") or 0) >= 1


def test_a_breaker_shows_as_a_gauge(client, connections):
    from sync.models import CircuitBreaker

    CircuitBreaker.objects.create(connection=Connection.objects.get(name="outreach"), state="open")

    text = scrape(client).content.decode()

    assert sample(text, "recordsync_breaker_state", connection="outreach") == 2


def test_counters_of_several_processes_add_up_in_multiprocess_mode(tmp_path: Path, monkeypatch):
    """Two worker processes count into one PROMETHEUS_MULTIPROC_DIR; a scrape sees their sum."""
    script = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'recordsync.settings'); django.setup(); "
        "from recordsync.metrics import ECHOES; ECHOES.labels('salesforce').inc({n})"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "SECRET_KEY": "test-only"}
    for n in (2, 5):
        subprocess.run([sys.executable, "-c", script.format(n=n)], env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    registry = registry_for_scrape(with_database=False)

    assert registry.get_sample_value("recordsync_echoes_suppressed_total", {"connection": "salesforce"}) == 7
