"""What every mock endpoint shares: the on/off switch, the call log and fault injection."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from crms.mocks.models import MockCall, MockFault

MAX_LATENCY_MS = 10_000
View = Callable[..., HttpResponse]


def mock_view(system: str, *, counted: bool = True, faults: bool = True) -> Callable[[View], View]:
    """Gate a mock endpoint on MOCK_CRMS_ENABLED, apply injected faults, log the call.

    `faults=False` for the OAuth endpoints: an injected fault is meant for the API calls a test
    or demo is watching, not for the login that happens to precede them.
    """

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not settings.MOCK_CRMS_ENABLED:
                raise Http404("mock CRMs are off")
            arrived = timezone.now()  # the log keeps arrival times: rate-limit proofs read them
            fault = take_fault(system) if faults else None
            if fault is not None and fault.latency_ms:
                time.sleep(min(fault.latency_ms, MAX_LATENCY_MS) / 1000)
            request.mock_fault = fault  # type: ignore[attr-defined]
            response = view(request, *args, **kwargs)
            MockCall.objects.create(
                system=system,
                at=arrived,
                method=request.method or "",
                path=request.path[:512],
                status=response.status_code,
                counted=counted,
            )
            return response

        return wrapper

    return decorate


def take_fault(system: str, now: datetime | None = None) -> MockFault | None:
    """The oldest active fault, with one of its calls used up (atomically: workers race for it)."""
    now = now or timezone.now()
    active = MockFault.objects.filter(system=system).filter(
        Q(calls_left__gt=0) | Q(calls_left__isnull=True, until__gt=now)
    )
    for fault in active.order_by("created_at"):
        if fault.calls_left is None:
            return fault
        if MockFault.objects.filter(pk=fault.pk, calls_left__gt=0).update(calls_left=F("calls_left") - 1):
            return fault
    return None


def fault_add(*, system: str, calls: int | None, seconds: int | None, **fields: Any) -> MockFault:
    until = timezone.now() + timedelta(seconds=seconds) if seconds else None
    return MockFault.objects.create(system=system, calls_left=calls, until=until, **fields)


def calls_in_window(system: str, seconds: int) -> int:
    since = timezone.now() - timedelta(seconds=seconds)
    return MockCall.objects.filter(system=system, counted=True, at__gte=since).count()
