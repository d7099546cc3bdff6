"""/healthz (the process is alive) and /readyz (it can take traffic: the database answers).

Redis being down does not make the web unready: events are still accepted and queued later.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "up"
    except Exception:
        return "down"


def _broker() -> str:
    try:
        return "up" if get_broker().ping() else "down"
    except Exception:
        return "down"


def _cache() -> str:
    try:
        cache.set("recordsync:readyz", "1", timeout=5)
        return "up" if cache.get("recordsync:readyz") == "1" else "down"
    except Exception:
        return "down"


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "broker": _broker(), "cache": _cache()}
    body = {
        "status": "ready" if checks["database"] == "up" else "unavailable",
        "checks": checks,
        "broker_kind": "redis" if settings.REDIS_URL else "orm",
    }
    return JsonResponse(body, status=200 if checks["database"] == "up" else 503)
