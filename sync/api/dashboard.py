"""The staff dashboard: what is stuck, since when and why, at one look (docs/dashboard.md).

Server-rendered pages behind the admin login. The figures come from `sync.ops.stats`, the alerts from
`sync.ops.alerts`; charts are drawn in the browser by Chart.js, served from our own static files.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import QuerySet
from django.forms.models import model_to_dict
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from sync.delivery import liveness
from sync.delivery.retry import jobs_retry
from sync.models import JobState, ProcessBeat, SyncJob
from sync.ops import stats
from sync.ops.alerts import alerts_open, alerts_recent

SYNCED, FAILED = "#2e7d32", "#c62828"
LAG, THROTTLE = "#1565c0", "#ef6c00"
RECENT_ALERTS = 10


def _context(request: HttpRequest, title: str, page: str) -> dict[str, Any]:
    # The admin's own frame (header, user tools, messages); no app sidebar, so the charts get the width.
    return {**admin.site.each_context(request), "title": title, "page": page, "is_nav_sidebar_enabled": False}


@staff_member_required
def overview(request: HttpRequest) -> HttpResponse:
    figures = stats.sync_stats(now=timezone.now())
    by_state = figures["jobs"]["by_state"]
    context = {
        **_context(request, "Sync dashboard", "overview"),
        "stats": figures,
        "charts": charts(figures),
        "issue_count": by_state[JobState.FAILED] + by_state[JobState.HELD],
        "alerts_open": alerts_open(),
        "alerts_recent": alerts_recent(limit=RECENT_ALERTS, resolved_only=True),
        "states": JobState.values,
        "processes": processes(now=timezone.now()),
    }
    return TemplateResponse(request, "dashboard/overview.html", context)


def processes(*, now: datetime) -> list[dict[str, Any]]:
    """Every worker and dispatcher that reported, newest first, each marked alive or stalled."""
    live = {pk for role in liveness.ROLES for pk in liveness.alive(role, now=now).values_list("pk", flat=True)}
    beats = ProcessBeat.objects.order_by("role", "host", "-beat_at")
    return [{**model_to_dict(beat), "beat_at": beat.beat_at, "alive": beat.pk in live} for beat in beats]


def charts(figures: stats.Stats) -> dict[str, Any]:
    """What dashboard.js hands Chart.js, one entry per <canvas data-chart="name">."""
    minutes, hours = figures["throughput"]["per_minute"], figures["throughput"]["per_hour"]
    names = [row["connection"] for row in figures["lag"]]
    return {
        "per_minute": _stacked([f"{b['start']:%H:%M}" for b in minutes], minutes, "attempts per minute"),
        "per_hour": _stacked([f"{b['start']:%d %H:00}" for b in hours], hours, "attempts per hour"),
        "lag": {
            "labels": names,
            "horizontal": True,
            "unit": "seconds the oldest due job has waited",
            "datasets": [{"label": "lag (s)", "color": LAG, "data": [r["lag_seconds"] for r in figures["lag"]]}],
        },
        "throttle": {
            "labels": [r["connection"] for r in figures["throttle"]],
            "horizontal": True,
            "max": 100,
            "unit": "% of the rate limit used in the current window (blank: unknown or no limit)",
            "datasets": [
                {"label": "% of limit", "color": THROTTLE, "data": [r["percent"] for r in figures["throttle"]]}
            ],
        },
    }


def _stacked(labels: list[str], buckets: list[stats.Bucket], unit: str) -> dict[str, Any]:
    return {
        "labels": labels,
        "stacked": True,
        "unit": unit,
        "datasets": [
            {"label": "synced", "color": SYNCED, "data": [b["synced"] for b in buckets]},
            {"label": "failed", "color": FAILED, "data": [b["failed"] for b in buckets]},
        ],
    }


@staff_member_required
def issues(request: HttpRequest) -> HttpResponse:
    groups = [_group_view(group) for group in stats.issue_groups()]
    context = {
        **_context(request, "Sync issues: failed and held jobs", "issues"),
        "groups": groups,
        "issue_count": sum(g["count"] for g in groups),
        "now": timezone.now(),
    }
    return TemplateResponse(request, "dashboard/issues.html", context)


def _group_view(group: stats.IssueGroup) -> dict[str, Any]:
    """The group as the template shows it: links and the payload as readable JSON."""
    failed = group["states"].get(JobState.FAILED, 0)
    admin_list = (
        reverse("admin:sync_syncjob_changelist")
        + "?"
        + urlencode({"last_error_code__exact": group["code"], **({"state__exact": JobState.FAILED} if failed else {})})
    )
    return {**group, "failed": failed, "admin_list": admin_list, "jobs": [_job_view(job) for job in group["jobs"]]}


def _job_view(job: stats.IssueJob) -> dict[str, Any]:
    conflict_url = None
    if job["state"] == JobState.HELD:
        conflict_url = (
            reverse("admin:sync_syncconflict_resolve", args=[job["conflict_id"]])
            if job["conflict_id"]
            else reverse("admin:sync_syncconflict_changelist") + "?" + urlencode({"q": job["record_id"]})
        )
    return {
        **job,
        "admin_url": reverse("admin:sync_syncjob_change", args=[job["id"]]),
        "status_url": _status_url(job),
        "conflict_url": conflict_url,
        "payload_json": json.dumps(job["payload"], indent=2, sort_keys=True, ensure_ascii=False, default=str),
    }


def _status_url(job: stats.IssueJob) -> str | None:
    """None for a record id the status API cannot address (one with a '/')."""
    try:
        path = reverse("sync-status", args=[job["record_id"]])
    except NoReverseMatch:
        return None
    return path + "?" + urlencode({"object_type": job["object_type"], "source": job["source"]})


@staff_member_required
@require_POST
def retry(request: HttpRequest) -> HttpResponse:
    """One failed job (`job`), or every failed job of an error group (`group`): back to pending, through the
    same service as the API and the admin action. Held jobs are never retried here: they wait for a review."""
    chosen = _chosen(request)
    if chosen is None:
        return HttpResponseBadRequest("Say which job (job=<id>) or which error group (group=<code>) to retry.")
    jobs, what = chosen
    retried = jobs_retry(jobs=jobs, actor=request.user.get_username())
    if retried:
        messages.success(request, f"Retried {len(retried)} job(s) {what}: pending again, the dispatcher sends them.")
    else:
        messages.warning(request, f"Nothing retried {what}: no longer failed (retried already, or a newer change).")
    return HttpResponseRedirect(reverse("dashboard:issues"))


def _chosen(request: HttpRequest) -> tuple[QuerySet[SyncJob], str] | None:
    failed = SyncJob.objects.filter(state=JobState.FAILED)
    if request.POST.get("job", "").isdecimal():
        job_id = int(request.POST["job"])
        return failed.filter(pk=job_id), f"(job {job_id})"
    if "group" in request.POST:  # an empty code is a group too: errors recorded without one
        code = request.POST["group"]
        return failed.filter(last_error_code=code), f"with error {code or '(no code)'}"
    return None
