"""A django-q2 cluster whose workers take their tasks from the broker themselves (`manage.py sync_cluster`).

Why: stock django-q2 hands tasks from a pusher process to its workers through one shared
`multiprocessing.Queue`. An idle worker blocked in `get()` holds that queue's reader lock, and a
SIGKILL (the OOM killer, `kill -9`) never releases it: the respawned worker and every other one then
wait forever, the cluster runs nothing and does not stop on SIGTERM. The monitor's result queue has
the same lock. Here no lock is shared between processes: each worker dequeues one task at a time
from the broker with its own connection and records its own result, so a kill loses at most the one
task that process held (the broker hands it out again after its `retry` time, and the engine's leases
cover the batch). django-q2's own `worker()` runs unchanged; it is given a source with `get()` and a
sink with `put()`. Scheduling, timeouts, recycling and the sentinel's guard loop stay django-q2's.

Pinned to django-q2 1.11 (requirements/base.txt): this subclasses its Sentinel.
"""

from __future__ import annotations

import logging
import os
import time
from multiprocessing import RawValue, Value
from typing import Any

from django import db
from django.utils import timezone
from django_q import cluster as q_cluster
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.monitor import save_cached, save_task
from django_q.scheduler import scheduler
from django_q.signals import post_execute
from django_q.signing import BadSignature, SignedPackage
from django_q.status import Stat
from django_q.worker import worker

from recordsync.heap import heap_freeze
from sync.delivery import liveness

logger = logging.getLogger("recordsync.qcluster")
IDLE_PAUSE_SECONDS = 1.0  # after a broker error, before asking again
BROKER_WAIT_SECONDS = 1.0  # between two pings of a broker that is down at start


class Flag:
    """A stop or start signal between the cluster's processes with no lock in it (the cluster's events).

    multiprocessing.Event sleeps on a Condition whose notify_all() waits until every sleeper has woken:
    a process that dies while waiting on it (SIGTERM to the whole process group, as systemd's
    control-group and some container inits send it, reaches the sentinel mid-wait) leaves the process
    that sets it waiting forever, and the cluster never stops. One shared byte, polled, cannot hang."""

    POLL_SECONDS = 0.05

    def __init__(self) -> None:
        self._value = RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = self.POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.POLL_SECONDS, left))
        return True


class ResultSink:
    """What django-q2's monitor process did, done in the worker itself. `put()` is called under the
    worker's timer lock, so it only keeps the task; `flush()` saves and acknowledges it outside."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.broker: Broker | None = None

    def put(self, task: dict[str, Any]) -> None:
        self.pending.append(task)

    def flush(self) -> None:
        while self.pending:
            task = self.pending.pop(0)
            self.broker = self.broker or get_broker()
            (save_cached if task.get("cached", False) else save_task)(task, self.broker)
            ack_id = task.pop("ack_id", False)
            if ack_id and (task["success"] or task.get("ack_failure", False)):
                self.broker.acknowledge(ack_id)
            post_execute.send(sender="django_q", task=task)


class BrokerSource:
    """What django-q2's pusher process did, done in the worker itself: one task, only when idle."""

    def __init__(self, stop: Flag, sink: ResultSink) -> None:
        self.stop, self.sink = stop, sink
        self.broker: Broker | None = None
        self.ready: list[tuple[Any, Any]] = []
        self.sentinel = os.getppid()
        self.beater = liveness.Beater("worker", group=self.sentinel)
        self.beater.keep_alive()

    def get(self) -> dict[str, Any] | str:
        self.sink.flush()  # the previous task's result, outside the timer lock
        if self.broker is None:
            self.broker = get_broker()  # after the fork: this process's own connection
        while not self.ready:
            if self.stop.is_set() or os.getppid() != self.sentinel:  # stopping, or the sentinel was killed
                return "STOP"
            self.beater.beat("idle")
            try:
                self.ready = list(self.broker.dequeue() or [])
            except Exception:  # the broker is away: keep asking, not too fast
                logger.exception("worker could not take a task from the broker")
                time.sleep(IDLE_PAUSE_SECONDS)
        ack_id, payload = self.ready.pop(0)
        try:
            task: dict[str, Any] = SignedPackage.loads(payload)
        except (TypeError, BadSignature):
            logger.exception("worker could not unpack a task")
            self.broker.fail(ack_id)
            return self.get()
        task["cluster"], task["ack_id"] = Conf.CLUSTER_NAME, ack_id
        self.beater.beat("busy", task_started_at=timezone.now())
        return task


def direct_worker(stop: Flag, timer: Any, timeout: int | None) -> None:
    sink = ResultSink()
    try:
        worker(BrokerSource(stop, sink), sink, timer, timeout)
    finally:
        sink.flush()
        liveness.process_gone(host=liveness.host_name(), pid=os.getpid())


class DirectSentinel(q_cluster.Sentinel):  # type: ignore[misc]
    """The sentinel with workers only: no pusher, no monitor, no queue between processes."""

    def start(self) -> None:
        """Wait for the broker instead of exiting when it is down at start (a Redis restart, a deploy
        racing the cache): the stock sentinel dies there, and with it the cluster."""
        while True:
            try:
                self.broker.ping()
                break
            except Exception as exc:  # the broker's own connection errors: nothing else is called here
                logger.warning("broker unavailable; the cluster waits for it", extra={"error": str(exc)[:200]})
                if self.stop_event.wait(BROKER_WAIT_SECONDS):
                    return
        self.spawn_cluster()
        self.guard()

    def spawn_worker(self) -> None:
        self.worker_stop: Flag = getattr(self, "worker_stop", None) or Flag()
        timer = Value("f", -1)
        args = (self.worker_stop, timer, self.timeout)
        process = q_cluster.get_mp_context().Process(target=direct_worker, args=args)
        process.daemon, process.timer = Conf.DAEMONIZE_WORKERS, timer
        self.pool.append(process)
        # Right before the fork, whatever ran before it: a forked worker must not inherit a database
        # connection. Sentinel and worker would then speak on one socket, each reading the other's answers;
        # the worker waited forever on one, mid-batch, and its jobs stood still until it counted as wedged.
        db.connections.close_all()
        # What the worker inherits (Django, the apps) lives as long as it does: frozen before the fork, the
        # worker's collections never walk it, nor write to it (its pages stay shared with the sentinel's).
        heap_freeze()
        process.start()

    def spawn_cluster(self) -> None:
        self.pool: list[Any] = []
        self.worker_stop = Flag()
        Stat(self).save()
        for _ in range(self.pool_size):
            self.spawn_worker()

    def reincarnate(self, process: Any) -> None:
        path = os.getenv("PROMETHEUS_MULTIPROC_DIR")
        if path:  # its counters stay counted; its live gauges go
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
        self.pool.remove(process)
        if process.timer.value == 0 and process.is_alive():  # over its task's timeout
            process.terminate()
        liveness.process_gone(host=liveness.host_name(), pid=process.pid)  # its slot is free at once
        self.spawn_worker()
        recycled = int(process.timer.value) == -2
        (logger.info if recycled else logger.critical)(
            "worker replaced", extra={"pid": process.pid, "exit_code": process.exitcode, "recycled": recycled}
        )
        self.reincarnations += 1

    def guard(self) -> None:
        self.start_event.set()
        Stat(self).save()
        counter, cycle = 0.0, Conf.GUARD_CYCLE
        while os.getppid() == self.parent_pid:  # the main process gone: do not run on as an orphan
            for process in list(self.pool):
                self._check(process, cycle)
            counter += cycle
            if counter >= 30 and Conf.SCHEDULER:
                counter = 0
                scheduler(broker=self.broker)
            Stat(self).save()
            if self.stop_event.wait(cycle):
                break
        self.stop()

    def _check(self, process: Any, cycle: float) -> None:
        lock = process.timer.get_lock()
        if not lock.acquire(timeout=cycle):  # a worker killed while holding its own timer lock
            if not process.is_alive():
                self.reincarnate(process)
            return
        try:
            if not process.is_alive() or process.timer.value == 0:
                self.reincarnate(process)
            elif process.timer.value > 0:
                process.timer.value -= cycle
        finally:
            lock.release()

    def stop(self) -> None:
        """Idle workers return within one dequeue; busy ones finish their task, up to its timeout."""
        self.worker_stop.set()
        deadline = time.monotonic() + (self.timeout or 30) + 5
        while any(p.is_alive() for p in self.pool) and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in self.pool:
            if process.is_alive():
                process.terminate()
        self.pool = []
        Stat(self).save()

    def status(self) -> str:
        if not self.start_event.is_set() and not self.stop_event.is_set():
            return str(Conf.STARTING)
        if not self.stop_event.is_set():
            return str(Conf.WORKING if any(p.timer.value > 0 for p in self.pool) else Conf.IDLE)
        return str(Conf.STOPPING if self.pool else Conf.STOPPED)
