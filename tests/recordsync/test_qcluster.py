"""The cluster's sentinel forks workers (recordsync/qcluster.py); a fork must never inherit a database connection.

Found by the kill matrix (tests/sync/test_kill_matrix.py): the sentinel marked a killed worker dead, which opened a
connection, then forked its replacement. Both processes then spoke on one socket, each reading the other's answers;
the new worker waited on an answer forever, mid-batch, and its jobs stood still for a minute."""

from __future__ import annotations

from multiprocessing import Value
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection as db
from django.utils import timezone
from django_q import cluster as q_cluster

from recordsync.qcluster import DirectSentinel
from sync.models import ProcessBeat

pytestmark = pytest.mark.django_db(transaction=True)  # the sentinel closes connections: no test transaction


class Forked:
    """Stands in for the worker process: records whether a connection was open when it would have forked."""

    started: list[bool]
    steps: list[str]  # the sentinel's freezes of its heap and its forks, in order

    def __init__(self, target: Any, args: tuple[Any, ...]) -> None:
        self.pid, self.exitcode, self.timer = 0, None, args[1]

    def start(self) -> None:
        Forked.started.append(db.connection is not None and db.connection.connection is not None)
        Forked.steps.append("fork")

    def is_alive(self) -> bool:
        return True


def sentinel(monkeypatch: pytest.MonkeyPatch) -> DirectSentinel:
    monkeypatch.setattr(q_cluster, "get_mp_context", lambda: SimpleNamespace(Process=Forked))
    # Recorded, not done: frozen, this test process's heap would never be collected again.
    monkeypatch.setattr("recordsync.qcluster.heap_freeze", lambda: Forked.steps.append("freeze"))
    Forked.started, Forked.steps = [], []
    made: DirectSentinel = DirectSentinel.__new__(DirectSentinel)  # no __init__: it would run the whole cluster
    made.pool, made.timeout, made.reincarnations = [], 60, 0
    return made


def test_a_killed_worker_is_replaced_by_a_fork_that_holds_no_database_connection(monkeypatch):
    running = sentinel(monkeypatch)
    killed = SimpleNamespace(pid=4242, exitcode=-9, timer=Value("f", -1), is_alive=lambda: False)
    ProcessBeat.objects.create(
        key="host:4242", role="worker", host="host", pid=4242, state="busy", beat_at=timezone.now()
    )
    running.pool = [killed]

    running.reincarnate(killed)  # marks it dead in the database first: that opens a connection

    assert Forked.started == [False], "the replacement worker was forked with the sentinel's connection open"
    assert len(running.pool) == 1 and running.pool[0] is not killed


def test_the_first_workers_are_forked_with_no_database_connection_open(monkeypatch):
    running = sentinel(monkeypatch)
    running.pool_size = 2
    running.cluster_id, running.start_event, running.stop_event = "test", None, None
    monkeypatch.setattr("recordsync.qcluster.Stat", lambda sentinel: SimpleNamespace(save=lambda: None))
    ProcessBeat.objects.count()  # a connection open, as the sentinel's own startup leaves one

    running.spawn_cluster()

    assert Forked.started == [False, False]
    assert Forked.steps == ["freeze", "fork", "freeze", "fork"]  # recordsync.heap: workers inherit it frozen
