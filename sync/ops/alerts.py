"""Alerts per connection: queue lag, failure share, breaker open time and the target's allowance (hours
left at the last hour's rate) against live thresholds.

`alerts_check` runs every minute (the django-q2 schedule "sync-alerts", migration sync/0014). It measures
every enabled connection, opens an `Alert` row when a measure crosses its threshold, keeps it up to date
while it stays over and resolves it when it is back under. Delivery is a separate pass over the rows, not
part of the crossing: every opening and every resolve not yet taken by the webhook is sent, so each incident
is announced once, and a webhook that was down hears of it on a later check. The rows are the truth; the
webhook (ALERT_WEBHOOK_URL, Slack-compatible JSON) only hears about them. See docs/alerts.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from crms.http import HttpClient, TransportError
from crms.models import Connection
from sync.delivery import allowance, config
from sync.delivery.throttle import quota_key
from sync.models import (
    Alert,
    AlertKind,
    AlertState,
    AttemptOutcome,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    JobState,
    SyncAttempt,
    SyncJob,
)

logger = logging.getLogger("recordsync.alerts")

# Shorter than a CRM call's read timeout: a chat webhook answers at once, and delivery holds a row lock.
WEBHOOK_TIMEOUT = (5.0, 10.0)
COLORS = {AlertState.OPEN: "#d9534f", AlertState.RESOLVED: "#2eb886"}
# An incident that opened and cleared with nobody told (no webhook configured yet, or down for days) and
# is older than this stays in the dashboard only: setting ALERT_WEBHOOK_URL must not flood a channel with history.
UNANNOUNCED_MAX_AGE = timedelta(days=1)


@dataclass(frozen=True)
class Reading:
    """One measure of one connection. `value` None: not enough data to say either way."""

    kind: AlertKind
    value: float | None
    threshold: int  # 0: this kind is off
    detail: str = ""

    @property
    def over(self) -> bool:
        if self.value is None or not self.threshold:
            return False
        if self.kind == AlertKind.ALLOWANCE:  # hours left: alert when fewer than the threshold
            return self.value < self.threshold
        # "Older / longer than" the threshold for times; "this share failed" for the failure percent.
        return self.value >= self.threshold if self.kind == AlertKind.FAILURES else self.value > self.threshold


# Measuring


def lag_measure(connection: Connection, now: datetime) -> float:
    """Seconds the oldest due job of this connection has waited (0: none due); as sync.ops.selectors.queue_lag."""
    due = SyncJob.objects.filter(target=connection, state__in=(JobState.PENDING, JobState.RETRYING)).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    oldest = due.aggregate(oldest=Min("updated_at"))["oldest"]
    return round(max(0.0, (now - oldest).total_seconds()), 1) if oldest else 0.0


def failures_measure(connection: Connection, now: datetime, window: int) -> tuple[float | None, str]:
    """The share (percent) of this connection's attempts in the window that failed, and how many of how many.
    None when fewer than ALERT_FAILURE_MIN_ATTEMPTS were made: two failures out of three say little."""
    attempts = SyncAttempt.objects.filter(
        job__target=connection,
        started_at__gt=now - timedelta(seconds=window),
        started_at__lte=now,
        outcome__in=(AttemptOutcome.SUCCESS, AttemptOutcome.ERROR),
    )
    counts = attempts.aggregate(total=Count("id"), failed=Count("id", filter=Q(outcome=AttemptOutcome.ERROR)))
    total, failed = int(counts["total"] or 0), int(counts["failed"] or 0)
    detail = f"{failed} of {total} attempts in the last {duration(window)}"
    if total < settings.ALERT_FAILURE_MIN_ATTEMPTS:
        return None, detail
    return round(100.0 * failed / total, 1), detail


def breaker_open_measure(connection: Connection, now: datetime) -> float | None:
    """Seconds the breaker has not been closed (0: closed). Measured from when it left `closed`, not from
    `opened_at`: a failed probe re-opens it and resets `opened_at` every cool-down, and a connection that
    stays down must still cross the threshold."""
    breaker = CircuitBreaker.objects.filter(connection=connection).first()
    if breaker is None or breaker.state == BreakerState.CLOSED:
        return 0.0
    left_closed = (
        BreakerTransition.objects.filter(connection=connection, from_state=BreakerState.CLOSED)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    since = breaker.opened_at
    # A transition later than opened_at belongs to no stretch we can trust (a row edited by hand): use opened_at.
    if left_closed is not None and (since is None or left_closed <= since):
        since = left_closed
    if since is None:
        return None
    return round(max(0.0, (now - since).total_seconds()), 1)


def allowance_measure(connection: Connection, now: datetime) -> tuple[float | None, str]:
    """Hours until the target's allowance (every integration's use counted) runs out at the last hour's rate;
    the hours until it refills when it does not run out first. None: the target never said, or too few samples."""
    found = allowance.forecast(quota_key(connection))
    if found is None or (found.rate_per_hour is None and found.runs_out_in is None):
        return None, ""
    rate = found.rate_per_hour or 0
    said = f"{found.used} of {found.cap} calls used ({found.percent_left:g}% left), {rate:g} an hour"
    if found.runs_out_in is None:
        return round(found.refills_in / 3600, 1), f"{said}: it refills before it runs out"
    return round(found.runs_out_in / 3600, 2), f"{said}: runs out at {found.runs_out_at:%Y-%m-%d %H:%M} UTC"


def readings(connection: Connection, now: datetime) -> list[Reading]:
    limits = config.effective(connection.pk)
    failed, detail = failures_measure(connection, now, limits.alert_failure_window)
    hours_left, said = allowance_measure(connection, now)
    return [
        Reading(AlertKind.LAG, lag_measure(connection, now), limits.alert_lag_seconds),
        Reading(AlertKind.FAILURES, failed, limits.alert_failure_percent, detail),
        Reading(AlertKind.BREAKER_OPEN, breaker_open_measure(connection, now), limits.alert_breaker_open_seconds),
        Reading(AlertKind.ALLOWANCE, hours_left, limits.alert_allowance_hours, said),
    ]


# Opening, updating, resolving


def alerts_check(*, now: datetime | None = None) -> dict[str, int]:
    """Measure every enabled connection, open, update or resolve its alerts, then deliver what is unsent.

    Safe to run twice at once: the partial unique constraint lets one open alert per (connection, kind)
    exist, resolves are conditional updates, and delivery locks each row it sends.
    """
    now = now or timezone.now()
    counts = {"opened": 0, "updated": 0, "resolved": 0}
    for connection in Connection.objects.filter(enabled=True):
        for reading in readings(connection, now):
            change = alert_apply(connection, reading, now)
            if change:
                counts[change] += 1
    # A disabled connection is not synced, so nothing it measures means anything: close what it had open.
    for alert in Alert.objects.filter(state=AlertState.OPEN, connection__enabled=False).select_related("connection"):
        counts["resolved"] += alert_resolve(alert, value=alert.value, now=now, why="the connection was disabled")
    return counts | alerts_deliver(now=now)


def alert_apply(connection: Connection, reading: Reading, now: datetime) -> str | None:
    """What this reading does to the connection's alert of its kind: opened, updated, resolved or nothing."""
    mine = Alert.objects.filter(connection=connection, kind=reading.kind, state=AlertState.OPEN)
    current = mine.select_related("connection").first()
    if reading.over and current is None:
        return "opened" if alert_open(connection, reading, now) else None
    if current is None:
        return None
    if reading.over:
        Alert.objects.filter(pk=current.pk, state=AlertState.OPEN).update(
            value=reading.value, threshold=reading.threshold, last_seen_at=now
        )
        return "updated"
    if not reading.threshold:
        why = "alerting for it was turned off (threshold 0)"
        return "resolved" if alert_resolve(current, value=current.value, now=now, why=why, threshold=0) else None
    if reading.value is None:
        return None  # too few attempts to tell: neither still failing nor recovered, so it stays open
    return "resolved" if alert_resolve(current, value=reading.value, now=now, why="back under the threshold") else None


def alert_open(connection: Connection, reading: Reading, now: datetime) -> bool:
    """False when another check opened it first (the partial unique constraint refused this one)."""
    if reading.value is None:
        return False  # never over a threshold: kept for the type checker
    text = opening_text(connection.name, reading)
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                connection=connection,
                kind=reading.kind,
                value=reading.value,
                threshold=reading.threshold,
                message=text,
                opened_at=now,
                last_seen_at=now,
            )
    except IntegrityError:
        return False
    logger.warning(
        "alert opened",
        extra={
            "alert_id": alert.pk,
            "connection": connection.name,
            "kind": reading.kind,
            "value": reading.value,
            "threshold": reading.threshold,
            "text": text,
        },
    )
    return True


def alert_resolve(alert: Alert, *, value: float, now: datetime, why: str, threshold: float | None = None) -> int:
    """1 if this call resolved it, 0 if another check already had (the update is conditional)."""
    fields: dict[str, Any] = {"state": AlertState.RESOLVED, "resolved_at": now, "value": value}
    if threshold is not None:
        fields["threshold"] = threshold
    done = Alert.objects.filter(pk=alert.pk, state=AlertState.OPEN).update(**fields)
    if done:
        took = round((now - alert.opened_at).total_seconds())
        logger.info(
            "alert resolved",
            extra={
                "alert_id": alert.pk,
                "connection": alert.connection.name,
                "kind": alert.kind,
                "value": value,
                "why": why,
                "open_seconds": took,
            },
        )
    return done


# Texts and payloads


def duration(seconds: float) -> str:
    """742 -> "12m 22s"; 3600 -> "1h"."""
    left = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    if left or not parts:
        parts.append(f"{left}s")
    return " ".join(parts)


def amount(kind: str, value: float) -> str:
    if kind == AlertKind.ALLOWANCE:
        return duration(value * 3600)  # kept in hours, the unit of its threshold
    return f"{value:g}%" if kind == AlertKind.FAILURES else duration(value)


def opening_text(name: str, reading: Reading) -> str:
    value, threshold = reading.value or 0.0, reading.threshold
    if reading.kind == AlertKind.LAG:
        what = f"the oldest due job has waited {duration(value)} (threshold {duration(threshold)})"
    elif reading.kind == AlertKind.FAILURES:
        what = f"{value:g}% of attempts failed: {reading.detail} (threshold {threshold}%)"
    elif reading.kind == AlertKind.ALLOWANCE:
        what = (
            f"the target's API allowance runs out in {duration(value * 3600)} at the current rate: {reading.detail} "
            f"(threshold {threshold} h; backfills stop at backfill_floor_percent)"
        )
    else:
        what = f"the circuit breaker has not closed for {duration(value)} (threshold {duration(threshold)})"
    return f"Record Sync: {name}: {what}"


def resolve_text(alert: Alert) -> str:
    if not alert.threshold:
        why = "alerting for it was turned off"
    elif not alert.connection.enabled:
        why = "the connection was disabled"
    else:
        why = f"back to {amount(alert.kind, alert.value)} (threshold {amount(alert.kind, alert.threshold)})"
    took = duration(((alert.resolved_at or alert.last_seen_at) - alert.opened_at).total_seconds())
    return f"Resolved: Record Sync: {alert.connection.name}: {alert.kind} alert after {took}: {why}"


def payload(alert: Alert, *, resolved: bool) -> dict[str, Any]:
    """Slack's incoming-webhook JSON: `text` (all that is required, and what notifications show) plus one
    legacy attachment with the facts as fields, which Slack, Mattermost and Rocket.Chat all render."""
    state = AlertState.RESOLVED if resolved else AlertState.OPEN
    at = alert.resolved_at if resolved else alert.opened_at
    fields = [
        ("Connection", alert.connection.name),
        ("Alert", alert.kind),
        ("State", state),
        ("Value", amount(alert.kind, alert.value)),
        ("Threshold", amount(alert.kind, alert.threshold)),
        ("Resolved" if resolved else "Opened", at.isoformat() if at else ""),
    ]
    return {
        "text": resolve_text(alert) if resolved else alert.message,
        "attachments": [
            {
                "color": COLORS[state],
                "fields": [{"title": title, "value": value, "short": True} for title, value in fields],
                "footer": f"recordsync alert {alert.pk}",
            }
        ],
    }


# Delivery


def redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def scrubbed(text: str, url: str) -> str:
    """An error message without the webhook's secret path (the seam's errors name the URL)."""
    parts = urlsplit(url)
    for secret in (url, f"{parts.scheme}://{parts.netloc}{parts.path}"):
        text = text.replace(secret, redacted(url))
    return text


def alerts_deliver(*, now: datetime) -> dict[str, int]:
    """Send every opening and resolve the webhook has not taken yet, oldest first.

    Stops at the first failure: the webhook is down or refusing, and the rest would only wait on the
    same timeout; the next check starts again from the oldest. No webhook configured: nothing is sent
    and nothing marked, so alerts are in the dashboard and the logs only.
    """
    counts = {"sent": 0, "send_failed": 0}
    url = settings.ALERT_WEBHOOK_URL
    if not url:
        return counts
    pending = list(Alert.objects.filter(_unsent(now)).order_by("opened_at", "pk").values_list("pk", flat=True))
    # For Slack and most chat webhooks the URL's path is the secret: the seam logs the host only.
    client = HttpClient(connection_name="alert_webhook", timeout=WEBHOOK_TIMEOUT, secret_path=True)
    for alert_id in pending:
        sent, error = alert_deliver(alert_id, client=client, url=url, now=now)
        counts["sent"] += sent
        if error:
            counts["send_failed"] += 1
            break
    return counts


def alert_deliver(alert_id: int, *, client: HttpClient, url: str, now: datetime) -> tuple[int, str]:
    """The opening, then (never before it) the resolve, of one alert; how many went out, and the error if any.

    The row stays locked while it is sent, so two checks running at once never announce it twice
    (PostgreSQL; SQLite has one writer anyway). A crash mid-send leaves it unsent: sent again next check.
    """
    with transaction.atomic():
        alert = (
            Alert.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("connection")
            .filter(pk=alert_id)
            .first()
        )
        if alert is None:
            return 0, ""  # another check is sending it right now
        sent = 0
        for resolved in (False, True):
            if not _due(alert, resolved=resolved):
                continue
            error = webhook_post(client, url, payload(alert, resolved=resolved))
            if error:
                Alert.objects.filter(pk=alert.pk).update(last_send_error=f"{now.isoformat()}: {error}"[:2000])
                logger.warning(
                    "alert not delivered",
                    extra={
                        "alert_id": alert.pk,
                        "connection": alert.connection.name,
                        "kind": alert.kind,
                        "resolve": resolved,
                        "error": error,
                    },
                )
                return sent, error
            field = "resolved_sent_at" if resolved else "opened_sent_at"
            setattr(alert, field, now)
            Alert.objects.filter(pk=alert.pk).update(**{field: now, "last_send_error": ""})
            sent += 1
    return sent, ""


def _unsent(now: datetime) -> Q:
    """Openings not yet taken (unless long over: see UNANNOUNCED_MAX_AGE), and resolves of announced ones."""
    recent = Q(state=AlertState.OPEN) | Q(resolved_at__gte=now - UNANNOUNCED_MAX_AGE)
    opening = Q(opened_sent_at__isnull=True) & recent
    return opening | Q(state=AlertState.RESOLVED, opened_sent_at__isnull=False, resolved_sent_at__isnull=True)


def _due(alert: Alert, *, resolved: bool) -> bool:
    if not resolved:
        return alert.opened_sent_at is None
    return alert.state == AlertState.RESOLVED and alert.resolved_sent_at is None and alert.opened_sent_at is not None


def webhook_post(client: HttpClient, url: str, body: dict[str, Any]) -> str:
    """An empty string when the webhook took it (any 2xx), else why not."""
    try:
        response = client.request("POST", url, json=body)
    except TransportError as exc:
        return scrubbed(str(exc), url)
    except requests.RequestException as exc:  # a malformed ALERT_WEBHOOK_URL: say so on the row, every check
        return scrubbed(f"{type(exc).__name__}: {exc}", url)
    if 200 <= response.status_code < 300:
        return ""
    return f"HTTP {response.status_code}: {response.text[:200]}"


# The schedule and the dashboard


def alerts_open() -> list[Alert]:
    """Open alerts, the oldest incident first, each with its connection."""
    return list(Alert.objects.filter(state=AlertState.OPEN).select_related("connection").order_by("opened_at", "pk"))


def alerts_recent(limit: int = 50, *, resolved_only: bool = False) -> list[Alert]:
    """The latest alerts (open or resolved, or resolved only), newest first."""
    rows = Alert.objects.select_related("connection").order_by("-opened_at", "-pk")
    if resolved_only:
        rows = rows.filter(state=AlertState.RESOLVED)
    return list(rows[:limit])
