"""The baseline view: parse the JSON body, insert one SyncEvent-shaped row, answer 202.

No authentication, validation, routing or job rows: it is the floor a Django view on this
database can reach, which the real endpoint is measured against.
"""

from __future__ import annotations

import json
import uuid

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from bench.rows import INSERT_EVENT_SQL, event_row


@require_POST
def ingest(request: HttpRequest) -> JsonResponse:
    item = json.loads(request.body)
    row = event_row(item, request_id=uuid.uuid4().hex)
    with connection.cursor() as cursor:
        cursor.execute(INSERT_EVENT_SQL, row)  # autocommit: one statement, one transaction
    return JsonResponse({"event_id": str(row[0])}, status=202)


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("v1/sync/", ingest),
    path("healthz", healthz),
]
