"""A circuit breaker per connection, its state kept in the database so every worker shares it.

Closed: calls go. N consecutive connection-level failures (timeouts, 5xx, refused credentials;
never a record's validation error) open it. Open: no call is made; after the cool-down exactly
one batch, across all workers, is let through as the probe (a conditional update picks it).
The probe's success closes the breaker; its failure opens it again for another cool-down.
We keep the state ourselves rather than use pybreaker: its shared storage resets the count on
any success in any process and has no cross-process lock for the half-open probe.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import Enum

from django.conf import settings
from django.db import transaction
from django.db.models import F

from crms.models import Connection
from sync.delivery import config
from sync.models import BreakerState, BreakerTransition, CircuitBreaker

logger = logging.getLogger("recordsync.breaker")


class Gate(Enum):
    GO = "go"
    PROBE = "probe"
    WAIT = "wait"


def _row(connection: Connection) -> CircuitBreaker:
    row, _ = CircuitBreaker.objects.get_or_create(connection=connection)
    return row


def breaker_allow(connection: Connection, now: datetime) -> tuple[Gate, datetime | None]:
    """May this batch call the connection? WAIT comes with the time to look again."""
    row = _row(connection)
    if row.state == BreakerState.CLOSED:
        return Gate.GO, None
    cooldown = timedelta(seconds=config.effective(connection.pk).breaker_cooldown)
    cooled = row.state == BreakerState.OPEN and row.opened_at is not None and row.opened_at + cooldown <= now
    # A probe whose worker died never reports: after a lease's time another may take its place.
    stale = (
        row.state == BreakerState.HALF_OPEN and row.updated_at + timedelta(seconds=settings.SYNC_LEASE_SECONDS) <= now
    )
    if cooled or stale:
        won = CircuitBreaker.objects.filter(pk=row.pk, state=row.state, updated_at=row.updated_at).update(
            state=BreakerState.HALF_OPEN, updated_at=now
        )
        if won:
            _transition(connection, row.state, BreakerState.HALF_OPEN, "cool-down over: one probe")
            return Gate.PROBE, None
    reopen_at = (row.opened_at or now) + cooldown
    return Gate.WAIT, max(reopen_at, now + timedelta(seconds=1))


def breaker_success(connection: Connection, *, probe: bool) -> None:
    """Closed: the run of failures is over. Open: only the probe's answer counts; a call let through
    before the breaker opened says nothing about the connection now, and must not skip the probe."""
    row = _row(connection)
    if row.state == BreakerState.CLOSED and row.failures == 0:
        return
    wanted = BreakerState.HALF_OPEN if probe else BreakerState.CLOSED
    with transaction.atomic():
        closed = CircuitBreaker.objects.filter(pk=row.pk, state=wanted).update(
            state=BreakerState.CLOSED, failures=0, opened_at=None
        )
        if closed and wanted != BreakerState.CLOSED:
            _transition(connection, wanted, BreakerState.CLOSED, "the probe succeeded")


def breaker_release_probe(connection: Connection) -> None:
    """The probe could not call at all (throttled): open again, keeping the cool-down already served."""
    CircuitBreaker.objects.filter(connection=connection, state=BreakerState.HALF_OPEN).update(state=BreakerState.OPEN)


def breaker_failure(connection: Connection, *, reason: str, now: datetime, probe: bool, at_once: bool = False) -> None:
    """`at_once`: the target said to stop (a daily limit): open without waiting for N failures."""
    threshold = config.effective(connection.pk).breaker_failures
    with transaction.atomic():
        row = CircuitBreaker.objects.select_for_update().get(pk=_row(connection).pk)
        failures = row.failures + 1
        if probe or at_once or (row.state == BreakerState.CLOSED and failures >= threshold):
            CircuitBreaker.objects.filter(pk=row.pk).update(
                state=BreakerState.OPEN, failures=failures, opened_at=now, last_error=reason[:2000]
            )
            if row.state != BreakerState.OPEN:
                _transition(connection, row.state, BreakerState.OPEN, f"{failures} failure(s) in a row: {reason}")
        else:
            CircuitBreaker.objects.filter(pk=row.pk).update(failures=F("failures") + 1, last_error=reason[:2000])


def breaker_close(connection: Connection, *, reason: str) -> bool:
    """Closed now, whatever its state (the connection was found working by other means, or staff resumed it);
    True if it was open or half-open."""
    with transaction.atomic():
        row = CircuitBreaker.objects.select_for_update().filter(connection=connection).first()
        if row is None or (row.state == BreakerState.CLOSED and row.failures == 0):
            return False
        CircuitBreaker.objects.filter(pk=row.pk).update(state=BreakerState.CLOSED, failures=0, opened_at=None)
        if row.state != BreakerState.CLOSED:
            _transition(connection, row.state, BreakerState.CLOSED, reason)
    return row.state != BreakerState.CLOSED


def _transition(connection: Connection, old: str, new: str, reason: str) -> None:
    BreakerTransition.objects.create(connection=connection, from_state=old, to_state=new, reason=reason[:2000])
    logger.warning("breaker", extra={"connection": connection.name, "from": old, "to": new, "reason": reason})
