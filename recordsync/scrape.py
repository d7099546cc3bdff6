"""GET /metrics: this process's counters (recordsync/metrics.py), or every process's in multiprocess mode, and
gauges of shared state (jobs by state, lag, breakers, open alerts and conflicts, process heartbeats) read from
the database when scraped, so they agree wherever they are read.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Max, Min, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from recordsync.errors import error_body

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class DatabaseCollector(Collector):
    """Gauges of shared state, read at scrape time with a few aggregate queries."""

    def collect(self) -> Iterator[Metric]:
        yield _jobs()
        yield _lag(timezone.now())
        yield _breakers()
        yield _alerts()
        yield _held_conflicts()
        yield from _processes(timezone.now())


def _jobs() -> Metric:
    from sync.models import SyncJob

    family = GaugeMetricFamily("recordsync_jobs", "Jobs by state and target", labels=["state", "target"])
    for row in SyncJob.objects.values("state", "target__name").annotate(n=Count("id")):
        family.add_metric([row["state"], row["target__name"]], row["n"])
    return family


def _lag(now: datetime) -> Metric:
    from sync.models import JobState, SyncJob

    family = GaugeMetricFamily("recordsync_lag_seconds", "Age of the oldest due job", labels=["connection"])
    due = SyncJob.objects.filter(state__in=(JobState.PENDING, JobState.RETRYING)).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    for row in due.values("target__name").annotate(oldest=Min("updated_at")):
        family.add_metric([row["target__name"]], max(0.0, (now - row["oldest"]).total_seconds()))
    return family


def _breakers() -> Metric:
    from sync.models import CircuitBreaker

    family = GaugeMetricFamily("recordsync_breaker_state", "0 closed, 1 half open, 2 open", labels=["connection"])
    for name, state in CircuitBreaker.objects.values_list("connection__name", "state"):
        family.add_metric([name], BREAKER_VALUES.get(state, 0))
    return family


def _alerts() -> Metric:
    from sync.models import Alert

    family = GaugeMetricFamily("recordsync_alerts_open", "Open alerts", labels=["connection", "kind"])
    for row in Alert.objects.filter(state="open").values("connection__name", "kind").annotate(n=Count("id")):
        family.add_metric([row["connection__name"], row["kind"]], row["n"])
    return family


def _held_conflicts() -> Metric:
    from sync.models import ConflictState, SyncConflict

    family = GaugeMetricFamily("recordsync_conflicts_open", "Conflicts waiting for review", labels=["connection"])
    rows = SyncConflict.objects.filter(state=ConflictState.OPEN).values("connection__name").annotate(n=Count("id"))
    for row in rows:
        family.add_metric([row["connection__name"]], row["n"])
    return family


def _processes(now: datetime) -> Iterator[Metric]:
    from sync.delivery import liveness
    from sync.models import ProcessBeat

    alive = GaugeMetricFamily("recordsync_processes_alive", "Workers and dispatchers alive", labels=["role"])
    for role in liveness.ROLES:
        alive.add_metric([role], liveness.alive(role, now=now).count())
    yield alive
    age = GaugeMetricFamily(
        "recordsync_process_beat_age_seconds", "Seconds since the freshest heartbeat", labels=["role", "host"]
    )
    for row in ProcessBeat.objects.values("role", "host").annotate(newest=Max("beat_at")):
        age.add_metric([row["role"], row["host"]], max(0.0, (now - row["newest"]).total_seconds()))
    yield age


def registry_for_scrape(*, with_database: bool) -> CollectorRegistry:
    """This process's counters (or, in multiprocess mode, every process of the task's), plus the gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    if not with_database:
        return registry
    scrape = CollectorRegistry()
    scrape.register(_Chain(registry))
    scrape.register(DatabaseCollector())
    return scrape


class _Chain(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def allowed(request: HttpRequest) -> bool:
    """A bearer token (METRICS_TOKEN), or a client address inside METRICS_ALLOWED_NETWORKS."""
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and given.startswith("Bearer ") and constant_time_compare(given[7:], token):
        return True
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics in the Prometheus text format; 403 (in our one error shape) when not allowed."""
    if not allowed(request):
        message = "Send Authorization: Bearer <METRICS_TOKEN>, or scrape from METRICS_ALLOWED_NETWORKS."
        return JsonResponse(
            error_body("permission_denied", message, [{"field": "Authorization", "message": message}]), status=403
        )
    body = generate_latest(registry_for_scrape(with_database=True))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
