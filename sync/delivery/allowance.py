"""The target's own allowance over time, per quota owner: what it said (every integration's calls count),
how fast it is going, when it runs out at that rate, and where backfills stop.

The throttle's observer hands each usage answer (`Sforce-Limit-Info`, `X-RateLimit-*`) to `sample`, which
keeps at most one row a minute per owner (QuotaSample). The forecast compares the newest row with the
oldest of the last hour. Backfill and reconcile calls stop while what remains is under the connection's
`backfill_floor_percent` of the allowance (`floor_wait`, asked by the throttle's gate for that lane), so a
backfill never spends what live changes and the org's other integrations will need before it refills.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from crms.base import QuotaSignal
from crms.models import Connection
from sync.models import QuotaSample

logger = logging.getLogger("recordsync.allowance")

SAMPLE_EVERY = timedelta(seconds=30)  # a row at most this often per owner (each process checks before writing)
RATE_OVER = timedelta(hours=1)  # the rate is the change over this much of the newest samples
RATE_MIN_SPAN = timedelta(minutes=2)  # fewer minutes of samples than this say too little to forecast
KEEP = timedelta(days=2)  # retention drops older rows
FLOOR_CHECK_SECONDS = 5.0  # a process reads the newest sample this often when asked for the floor

_written: dict[str, datetime] = {}  # this process's last row per owner: most answers skip the database
_heard: dict[str, Heard] = {}  # the last answer this process heard per owner (always current for its own calls)
_latest: dict[str, tuple[float, Heard | None]] = {}  # newest row per owner, read at most every 5 s
clock: Callable[[], float] = time.monotonic  # swappable in tests


@dataclass(frozen=True)
class Heard:
    at: datetime
    used: int
    cap: int
    period_seconds: float


def sample(*, connection: Connection, key: str, signal: QuotaSignal, now: datetime | None = None) -> bool:
    """Keep what one answer said of the allowance; True if a row was written. Advisory: never raises."""
    if signal.used is None or not signal.cap:
        return False
    now = now or timezone.now()
    _heard[key] = Heard(now, max(0, signal.used), signal.cap, float(signal.resets_in or 0.0))
    last = _written.get(key)
    if last is not None and now - last < SAMPLE_EVERY:
        return False
    try:
        if QuotaSample.objects.filter(key=key, at__gt=now - SAMPLE_EVERY).exists():  # another process did
            _written[key] = now
            return False
        QuotaSample.objects.create(
            key=key,
            connection=connection,
            at=now,
            used=max(0, signal.used),
            cap=signal.cap,
            period_seconds=float(signal.resets_in or 0.0),
        )
    except Exception as exc:  # the next answer says it again
        logger.warning("could not keep the allowance sample", extra={"quota_key": key, "error": repr(exc)})
        return False
    _written[key] = now
    return True


@dataclass(frozen=True)
class Forecast:
    """One quota owner's allowance as the target last told it, and where it is heading."""

    key: str
    connection: str
    observed_at: datetime
    used: int
    cap: int
    refills_in: float  # seconds until it refills (for a rolling allowance, its length)
    rate_per_hour: float | None  # calls an hour, every integration's, over the last hour; None: too few samples
    runs_out_in: float | None  # seconds, at that rate, before it refills; None: it does not (or cannot tell)

    @property
    def remaining(self) -> int:
        return max(0, self.cap - self.used)

    @property
    def percent_left(self) -> float:
        return round(100.0 * self.remaining / self.cap, 1) if self.cap else 0.0

    @property
    def runs_out_at(self) -> datetime | None:
        return None if self.runs_out_in is None else self.observed_at + timedelta(seconds=self.runs_out_in)


def forecast(key: str) -> Forecast | None:
    """The owner's newest sample and the rate since the oldest within RATE_OVER; None if never sampled."""
    rows = QuotaSample.objects.filter(key=key).select_related("connection")
    newest = rows.order_by("-at").first()
    if newest is None:
        return None
    oldest = rows.filter(at__gte=newest.at - RATE_OVER).order_by("at").first()
    return _forecast(newest, oldest or newest)


def forecasts(*, now: datetime | None = None) -> list[Forecast]:
    """Every owner sampled within the last two days, least left first (the dashboard's table): one query
    however many owners there are (each owner's samples of the hour before its newest)."""
    now = now or timezone.now()
    newest_at = QuotaSample.objects.filter(key=OuterRef("key")).order_by("-at").values("at")[:1]
    rows = (
        QuotaSample.objects.filter(at__gt=now - KEEP)
        .annotate(newest_at=Subquery(newest_at))
        .filter(at__gte=F("newest_at") - RATE_OVER)
        .select_related("connection")
        .order_by("key", "at")
    )
    spans: dict[str, list[QuotaSample]] = {}
    for row in rows:
        spans.setdefault(row.key, []).append(row)
    found = [_forecast(span[-1], span[0]) for span in spans.values()]
    return sorted(found, key=lambda f: (f.percent_left, f.key))


def _forecast(newest: QuotaSample, oldest: QuotaSample) -> Forecast:
    rate = None
    runs_out_in = None
    if newest.at - oldest.at >= RATE_MIN_SPAN:
        span = (newest.at - oldest.at).total_seconds()
        # A rolling allowance drops old calls as new ones come: a fall reads as no use, not a negative one.
        per_second = max(0.0, (newest.used - oldest.used) / span)
        rate = round(per_second * 3600, 1)
        left = max(0, newest.cap - newest.used)
        if left == 0:
            runs_out_in = 0.0
        elif per_second > 0:
            until = left / per_second
            runs_out_in = until if not newest.period_seconds or until < newest.period_seconds else None
    elif newest.used >= newest.cap:
        runs_out_in = 0.0
    return Forecast(
        key=newest.key,
        connection=newest.connection.name,
        observed_at=newest.at,
        used=int(newest.used),
        cap=int(newest.cap),
        refills_in=float(newest.period_seconds),
        rate_per_hour=rate,
        runs_out_in=runs_out_in,
    )


def floor_wait(key: str, floor_percent: int) -> float:
    """Seconds a backfill or reconcile call waits for the allowance (0: it may go): while what remains is
    under `floor_percent` of it, until it may have refilled (at most SYNC_THROTTLE_RECHECK_SECONDS later,
    when one call looks again). Reads the newest sample at most every FLOOR_CHECK_SECONDS per process."""
    if floor_percent <= 0:
        return 0.0
    checked, stored = _latest.get(key, (float("-inf"), None))
    if clock() - checked >= FLOOR_CHECK_SECONDS:
        found = QuotaSample.objects.filter(key=key).order_by("-at").first()
        stored = Heard(found.at, int(found.used), int(found.cap), found.period_seconds) if found else None
        _latest[key] = (clock(), stored)
    # Another process's row, or what this one heard since (rows are written at most every SAMPLE_EVERY).
    heard = [h for h in (stored, _heard.get(key)) if h is not None]
    row = max(heard, key=lambda h: h.at) if heard else None
    if row is None or not row.cap:
        return 0.0  # the target never said: nothing to keep back
    if 100.0 * max(0, row.cap - row.used) / row.cap >= floor_percent:
        return 0.0
    recheck = float(settings.SYNC_THROTTLE_RECHECK_SECONDS)  # as throttle.recheck_seconds, which imports us
    # Heard long enough ago, it may have refilled (a rolling allowance drops old calls): one call goes, and
    # its answer says where it stands now. Without it, a floor nobody else's call refreshes would never lift.
    if (timezone.now() - row.at).total_seconds() >= recheck:
        return 0.0
    return max(1.0, min(recheck, float(row.period_seconds or recheck)))


def forget() -> None:
    """Drop what this process remembers (tests)."""
    _written.clear()
    _heard.clear()
    _latest.clear()


def prune(*, now: datetime | None = None) -> int:
    """Rows older than KEEP go (retention)."""
    now = now or timezone.now()
    deleted, _ = QuotaSample.objects.filter(at__lt=now - KEEP).delete()
    return deleted
