"""Heartbeats of the worker and dispatcher processes, and the liveness verdict a supervisor acts on.

A worker beats when it takes a task (busy), when it is done (idle), and every few seconds from a thread
of its own whatever it does; a dispatcher beats on its passes. A role on a host is alive while one of
its processes beat within STALE_SECONDS and holds no task past its timeout (wedged). Otherwise it makes
no progress, and the supervisor restarts it: `manage.py sync_health`, which compose, the ECS template
and `make run` call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q, QuerySet
from django.utils import timezone

from sync.models import ProcessBeat

logger = logging.getLogger("recordsync.liveness")
BEAT_SECONDS = 5.0  # an idle process writes its beat at most this often
STALE_SECONDS = 30.0  # no beat for this long: the process is dead or stuck
BUSY_MARGIN_SECONDS = 15.0  # a task may run for its timeout and this much more before its worker counts as wedged
FORGET_AFTER = timedelta(hours=1)  # beats older than this are deleted by the dispatcher
ROLES = ("worker", "dispatcher")


def host_name() -> str:
    return socket.gethostname()[:64]


class Beater:
    """One process's heartbeat: written when its state changes, and at most every BEAT_SECONDS otherwise."""

    clock: Callable[[], float] = time.monotonic

    def __init__(self, role: str, *, group: int | None = None) -> None:
        self.role, self.group = role, group
        self.host, self.pid = host_name(), os.getpid()
        self.last = float("-inf")
        self.last_state = ""

    def keep_alive(self) -> None:
        """A thread that refreshes this process's beat every BEAT_SECONDS, so a long batch (a slow target)
        still shows the worker alive, and a killed one goes silent within STALE_SECONDS."""
        key = f"{self.host}:{self.pid}"

        def refresh() -> None:
            while True:
                time.sleep(BEAT_SECONDS)
                with contextlib.suppress(DatabaseError):  # the database is away: the main thread says so
                    ProcessBeat.objects.filter(key=key).exclude(state="dead").update(beat_at=timezone.now())

        threading.Thread(target=refresh, name="heartbeat", daemon=True).start()

    def beat(self, state: str = "idle", *, task_started_at: datetime | None = None) -> None:
        now = self.clock()
        if state == self.last_state and now - self.last < BEAT_SECONDS:
            return
        try:
            values = {
                "role": self.role,
                "host": self.host,
                "pid": self.pid,
                "group": self.group,
                "state": state,
                "beat_at": timezone.now(),
                "task_started_at": task_started_at,
            }
            ProcessBeat.objects.update_or_create(key=f"{self.host}:{self.pid}", defaults=values)
        except DatabaseError as exc:  # the database is away: the work cannot go on either; say so once a beat
            logger.warning("heartbeat not written", extra={"role": self.role, "error": str(exc)[:200]})
            return
        self.last, self.last_state = now, state


def process_gone(*, host: str, pid: int) -> None:
    """A process known to have exited (its sentinel saw it die, or it stopped): marked dead, so the
    dispatcher hands its leases back at once (leases.leases_reap) and it holds no slot."""
    try:
        ProcessBeat.objects.filter(key=f"{host}:{pid}").update(state="dead", beat_at=timezone.now())
    except DatabaseError as exc:  # the database is away: its silence will say the same before long
        logger.warning("process not marked dead", extra={"pid": pid, "error": str(exc)[:200]})


def beats_forget(*, now: datetime) -> int:
    return ProcessBeat.objects.filter(beat_at__lt=now - FORGET_AFTER).delete()[0]


def _alive_q(now: datetime) -> Q:
    """Beat within STALE_SECONDS, not marked dead, and not holding a task past its timeout (wedged)."""
    busy_since = now - timedelta(seconds=settings.Q_CLUSTER["timeout"] + BUSY_MARGIN_SECONDS)
    fresh = Q(beat_at__gte=now - timedelta(seconds=STALE_SECONDS))
    wedged = Q(state="busy", task_started_at__lt=busy_since)
    return fresh & ~wedged & ~Q(state="dead")


def alive(role: str, *, now: datetime) -> QuerySet[ProcessBeat]:
    """Processes of a role that beat recently and are not stuck in a task."""
    return ProcessBeat.objects.filter(role=role).filter(_alive_q(now))


def dead_among(keys: set[str], *, now: datetime) -> dict[str, datetime]:
    """Of these host:pid keys, the ones whose process reported and is now known dead or silent, with when
    it was last known alive; a process that never reported (no heartbeat row) is not judged."""
    known = ProcessBeat.objects.filter(key__in=keys)
    living = set(known.filter(_alive_q(now)).values_list("key", flat=True))
    return {key: at for key, at in known.values_list("key", "beat_at") if key not in living}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def health(*, role: str, host: str, now: datetime) -> Verdict:
    """Whether a role makes progress on a host. A worker cluster whose workers all stopped beating (dead,
    or wedged) or whose every worker holds a task past its timeout is not alive."""
    if not ProcessBeat.objects.filter(role=role, host=host).exists():
        return Verdict(False, f"no {role} on {host} has ever beaten")
    live = alive(role, now=now).filter(host=host).count()
    if not live:
        return Verdict(False, f"no {role} on {host} has beaten for {STALE_SECONDS:.0f} s or more")
    return Verdict(True, f"{live} {role} process(es) on {host} alive")
