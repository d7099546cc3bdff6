"""Holds that end when the target takes calls again, not when a timer runs out.

A daily allocation spent (a connector's error with `pause_connection`) does not say when it refills: a
rolling 24 hours free up call by call. So the quota owner is held (the throttle's hold, shared by every
worker) and probed with one cheap call (`Connector.probe`) about a minute later, then at a doubling
interval up to the pause the target asked for. The first probe that succeeds lifts the hold, closes the
breakers of the connections sharing the allowance and makes their waiting jobs and polls due at once.
Staff can do the same by hand (`connection_resume`: the admin, POST /v1/sync/connections/{name}/resume).

One probe per quota owner at a time, across every process: the dispatcher claims a due probe with a
conditional update (`probes_claim`) and a worker makes the call under that claim (`hold_probe`).

A cap (usage near the target's allowance: the calls left spread over the rest of its period) ends early
too: an answer that shows room again drops it, and the jobs it parked are due at once (`cap_room`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework.exceptions import NotFound

from crms.base import Connector, ConnectorError
from crms.build import connector_for
from crms.models import Connection
from sync.delivery import config, dispatch
from sync.delivery.breaker import breaker_close
from sync.delivery.throttle import THROTTLED, Throttle, observer_for, quota_key, quota_sharers, throttle
from sync.models import InboundCursor, JobState, QuotaHold, SyncJob

logger = logging.getLogger("recordsync.holds")

# A probe task that died holding its claim gives it up after this long.
PROBE_LEASE = timedelta(minutes=2)


def probe_first_seconds() -> float:
    """The first probe is due this long after the limit was heard (SYNC_HOLD_PROBE_FIRST_SECONDS, 60)."""
    return float(settings.SYNC_HOLD_PROBE_FIRST_SECONDS)


@dataclass(frozen=True)
class Resumed:
    """What lifting a quota owner's hold did."""

    key: str
    connections: list[str]  # every connection sharing the allowance
    hold_lifted: bool  # a hold was in force (in the throttle's store, or a probe was scheduled)
    breakers_closed: list[str]
    jobs_due: int  # waiting jobs made due now
    polls_due: int  # polls backing off made due now


# --- the target says its allowance is spent -------------------------------------------------------


def observer(connection: Connection, backend: Throttle) -> Callable[[requests.Response], None] | None:
    """The throttle's observer for this connection, telling this module when the allowance is spent
    (a hold to probe) and when it shows room again (a cap to drop)."""
    knobs = config.effective(connection.pk)
    key = quota_key(connection)

    def spent(pause: float, reason: str) -> None:
        hold_begin(connection=connection, pause=pause, reason=reason)

    def room() -> None:
        cap_room(key=key)

    return observer_for(
        connection,
        window=knobs.rate_limit_window,
        share_percent=knobs.quota_slow_down_percent,
        backend=backend,
        on_spent=spent,
        on_room=room,
    )


def hold_begin(*, connection: Connection, pause: float, reason: str, now: datetime | None = None) -> QuotaHold:
    """Hold the quota owner until a probe succeeds; the first probe is due in about a minute (never later than
    `pause`). A hold already in force keeps its schedule: a failed probe's own answer, or a call that was
    already under way, says the same thing again."""
    now = now or timezone.now()
    first = min(probe_first_seconds(), pause)
    row, created = QuotaHold.objects.get_or_create(
        key=quota_key(connection),
        defaults={
            "connection": connection,
            "reason": reason[:2000],
            "held_at": now,
            "probe_at": now + timedelta(seconds=first),
            "probe_interval": first,
            "probe_max": max(pause, first),
        },
    )
    if created:
        logger.warning(
            "quota owner held until a probe succeeds",
            extra={"quota_key": row.key, "connection": connection.name, "first_probe_s": first, "reason": reason[:300]},
        )
    return row


# --- probing ----------------------------------------------------------------------------------------


def probes_claim(*, now: datetime) -> list[tuple[int, str]]:
    """The holds whose probe is due, each claimed for one probe task: (hold id, owner).

    The claim is a conditional update, so dispatchers on several machines never probe one quota owner twice
    at once; a lost task's claim runs out after PROBE_LEASE.
    """
    free = Q(probe_owner="") | Q(probe_until__lt=now)
    claimed: list[tuple[int, str]] = []
    for pk in QuotaHold.objects.filter(free, probe_at__lte=now).values_list("pk", flat=True):
        owner = f"probe-{uuid.uuid4().hex[:12]}"
        due = QuotaHold.objects.filter(free, pk=pk, probe_at__lte=now)
        if due.update(probe_owner=owner, probe_until=now + PROBE_LEASE):
            claimed.append((pk, owner))
    return claimed


def probe_release(*, hold_id: int, owner: str) -> None:
    """A claimed probe whose task could not be queued: the next pass claims it again."""
    QuotaHold.objects.filter(pk=hold_id, probe_owner=owner).update(probe_owner="", probe_until=None)


def probing_connector(connection: Connection) -> Connector:
    """The connector without the throttle's gate: the probe is the one call let through the hold (it is what
    lifts it). Its answer is still read, so a limit it meets renews the hold and the usage it shows sets a cap."""
    return connector_for(connection, observe=observer(connection, throttle()))


def hold_probe(
    *,
    hold_id: int,
    owner: str,
    now: datetime | None = None,
    connector: Callable[[Connection], Connector] = probing_connector,
) -> str:
    """Make the one probe call of a claimed hold. Success lifts the hold; failure keeps the owner held and
    schedules the next probe at twice the interval (at most the pause the target asked for).

    Returns "lifted", "held", or "gone" (the hold was lifted meanwhile, or the claim is no longer ours).
    """
    row = QuotaHold.objects.filter(pk=hold_id, probe_owner=owner).select_related("connection").first()
    if row is None:
        return "gone"
    try:
        through = _probe_call(_probe_connection(row), connector)
    except ConnectorError as exc:  # the target does not take calls yet: keep holding
        _probe_failed(row, owner, exc, now or timezone.now())
        return "held"
    hold_lift(key=row.key, reason=f"a probe through {through} succeeded")
    return "lifted"


def _probe_call(through: Connection | None, connector: Callable[[Connection], Connector]) -> str:
    """The probe through `through`; its name when it succeeds. Any failure is a ConnectorError."""
    if through is None:
        raise ConnectorError("no enabled connection shares this allowance", code="NO_CONNECTION")
    try:
        connector(through).probe()
    except ConnectorError:
        raise
    except Exception as exc:  # a bug or a broken config: the claim must still be given back
        logger.exception("probe failed", extra={"connection": through.name})
        raise ConnectorError(f"{type(exc).__name__}: {exc}", code="connector_exception") from exc
    return through.name


def _probe_connection(row: QuotaHold) -> Connection | None:
    """The connection that heard the limit, or another enabled one sharing the allowance."""
    if row.connection.enabled:
        return row.connection
    return quota_sharers(row.key).filter(enabled=True).order_by("name").first()


def _probe_failed(row: QuotaHold, owner: str, error: ConnectorError, now: datetime) -> None:
    interval = min(row.probe_interval * 2, row.probe_max)
    updated = QuotaHold.objects.filter(pk=row.pk, probe_owner=owner).update(
        probe_at=now + timedelta(seconds=interval),
        probe_interval=interval,
        probes=F("probes") + 1,
        last_probe_at=now,
        last_probe_error=f"{error.code}: {error.message}"[:2000],
        probe_owner="",
        probe_until=None,
    )
    if not updated:
        return
    try:
        # Held until the next probe says otherwise, whatever this one met (a limit renews the hold by itself,
        # a timeout would not): ordinary calls never race the probe to the target.
        throttle().hold(row.key, interval + PROBE_LEASE.total_seconds())
    except Exception as exc:  # the store is away: calls wait as THROTTLE_UNAVAILABLE anyway
        logger.warning("could not renew the hold", extra={"quota_key": row.key, "error": repr(exc)})
    logger.info(
        "probe failed; still held",
        extra={"quota_key": row.key, "next_probe_s": interval, "error": f"{error.code}: {error.message}"[:300]},
    )


# --- lifting ----------------------------------------------------------------------------------------


def hold_lift(*, key: str, reason: str) -> Resumed:
    """The quota owner takes calls again: its hold is lifted (in the throttle's store and the probe schedule),
    the breakers of its connections close, and their waiting jobs and backed-off polls are due at once."""
    released = throttle().release(key)  # first: a job made due below must find the way open
    sharers = list(quota_sharers(key).order_by("name"))
    ids = [c.pk for c in sharers]
    with transaction.atomic():
        scheduled = QuotaHold.objects.filter(key=key).delete()[0] > 0
        closed = [c.name for c in sharers if breaker_close(c, reason=reason)]
        # next_attempt_at None is due at once, whatever the dispatcher's clock says.
        jobs = SyncJob.objects.filter(target_id__in=ids, state=JobState.RETRYING, next_attempt_at__isnull=False)
        jobs_due = jobs.update(next_attempt_at=None)
        polls_due = InboundCursor.objects.filter(connection_id__in=ids, retry_at__isnull=False).update(retry_at=None)
        transaction.on_commit(lambda: dispatch.nudge(ids))
    resumed = Resumed(
        key=key,
        connections=[c.name for c in sharers],
        hold_lifted=released or scheduled,
        breakers_closed=closed,
        jobs_due=jobs_due,
        polls_due=polls_due,
    )
    logger.warning(
        "hold lifted", extra={"quota_key": key, "reason": reason, "jobs_due": jobs_due, "breakers_closed": closed}
    )
    return resumed


def connection_resume(*, name: str, actor: str) -> Resumed:
    """Staff lift a held connection by hand: everything a successful probe does, for the connection's quota
    owner (so for every connection sharing its allowance). 404: no such connection."""
    connection = Connection.objects.filter(name=name).first()
    if connection is None:
        raise NotFound(f"No connection named '{name}'.")
    return hold_lift(key=quota_key(connection), reason=f"resumed by {actor}")


def cap_room(*, key: str) -> int:
    """An answer shows room again and the cap was dropped: the jobs it handed back are due at once, instead
    of waiting out a spread computed when the allowance was nearly spent. Returns how many."""
    ids = list(quota_sharers(key).values_list("pk", flat=True))
    parked = SyncJob.objects.filter(
        target_id__in=ids, state=JobState.RETRYING, last_error_code=THROTTLED, next_attempt_at__isnull=False
    )
    woken = parked.update(next_attempt_at=None)
    if woken:
        logger.info("room again: capped jobs due now", extra={"quota_key": key, "jobs": woken})
    return woken
