"""Prometheus metrics: the counters each process keeps. The gauges read from the database at scrape time,
and the /metrics view, are in recordsync/scrape.py, so that what counts (connectors included) imports nothing
of the sync pipeline.

Counters (events accepted, CRM calls and their latency, throttle waits, retries, conflicts,
echoes) count what this process did, so every web and worker task is scraped on its own and
Prometheus sums them; with several processes in one task (gunicorn workers, the django-q2
cluster) set PROMETHEUS_MULTIPROC_DIR and they are summed at scrape time (docs/deploy.md).
Gauges that describe shared state (jobs by state, lag, breakers, open alerts and conflicts) are
read from the database when scraped, so they agree wherever they are read.

prometheus-client is the reference Python client, kept by the Prometheus project: its text
format, histograms and multiprocess mode are what Prometheus expects, nothing to hand-write.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_ACCEPTED = Counter("recordsync_events_accepted", "Events stored", ["source", "operation"])
CRM_CALLS = Counter("recordsync_crm_calls", "Calls to a connection's API, by outcome", ["connection", "outcome"])
CRM_CALL_SECONDS = Histogram(
    "recordsync_crm_call_seconds",
    "Duration of calls to a connection's API",
    ["connection"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
THROTTLE_WAITS = Counter("recordsync_throttle_waits", "Calls held back by the throttle", ["connection", "kind"])
RETRIES = Counter("recordsync_job_retries", "Job attempts that failed and will be retried", ["connection", "code"])
CONFLICTS = Counter("recordsync_conflicts", "Conflicts detected, by policy", ["connection", "policy"])
ECHOES = Counter("recordsync_echoes_suppressed", "Captured changes recognised as our own writes", ["connection"])


def call_outcome(status: int | None, error_code: str = "") -> str:
    """A few stable label values: 2xx, 3xx, 4xx, 429, 5xx, or the transport error's code."""
    if status is None:
        return error_code or "no_answer"
    return "429" if status == 429 else f"{status // 100}xx"
