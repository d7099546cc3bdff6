"""Heartbeats and the liveness verdict a supervisor acts on (`manage.py sync_health`), in /metrics and on
the dashboard."""

from __future__ import annotations

import os
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from sync.delivery import leases, liveness
from sync.models import ProcessBeat

pytestmark = pytest.mark.django_db
HOST = liveness.host_name()


def beat(pid: int, *, role: str = "worker", ago: float = 0.0, state: str = "idle", busy_for: float | None = None):
    now = timezone.now()
    started = now - timedelta(seconds=busy_for) if busy_for is not None else None
    return ProcessBeat.objects.create(
        key=f"{HOST}:{pid}",
        role=role,
        host=HOST,
        pid=pid,
        state=state,
        beat_at=now - timedelta(seconds=ago),
        task_started_at=started,
    )


def verdict(role: str = "worker") -> liveness.Verdict:
    return liveness.health(role=role, host=HOST, now=timezone.now())


def test_a_cluster_with_a_fresh_heartbeat_is_alive():
    beat(1, ago=3)
    beat(2, ago=120)  # one worker long gone is not the cluster

    assert verdict() == liveness.Verdict(True, f"1 worker process(es) on {HOST} alive")


def test_a_cluster_whose_heartbeats_all_went_stale_is_not():
    beat(1, ago=31)
    beat(2, ago=45)

    assert not verdict().ok and "has beaten for 30 s" in verdict().reason


def test_a_worker_busy_within_its_task_timeout_is_alive_one_past_it_is_wedged(settings):
    timeout = settings.Q_CLUSTER["timeout"]
    beat(1, ago=3, state="busy", busy_for=timeout)  # a long batch: its heartbeat thread keeps beating
    assert verdict().ok

    ProcessBeat.objects.filter(pid=1).update(task_started_at=timezone.now() - timedelta(seconds=timeout + 20))
    assert not verdict().ok


def test_a_host_that_never_reported_is_not_alive():
    assert verdict("dispatcher") == liveness.Verdict(False, f"no dispatcher on {HOST} has ever beaten")


def test_the_beater_writes_on_a_change_and_at_most_every_few_seconds_otherwise(monkeypatch):
    ticks = iter([0.0, 1.0, 2.0, 7.0])
    monkeypatch.setattr(liveness.Beater, "clock", staticmethod(lambda: next(ticks)))
    beater = liveness.Beater("worker", group=7)

    beater.beat("idle")  # 0 s: written
    first = ProcessBeat.objects.get().beat_at
    beater.beat("idle")  # 1 s: too soon, not written
    assert ProcessBeat.objects.get().beat_at == first
    beater.beat("busy", task_started_at=timezone.now())  # 2 s: a change, written at once
    assert ProcessBeat.objects.get().state == "busy"
    beater.beat("busy")  # 7 s: due again

    row = ProcessBeat.objects.get()
    assert (row.role, row.group, row.state, row.task_started_at) == ("worker", 7, "busy", None)


def test_sync_health_exits_1_naming_the_problem_and_0_when_alive():
    with pytest.raises(CommandError, match=r"no worker on .* has ever beaten"):
        call_command("sync_health", "--role", "worker")
    beat(1)
    out = StringIO()

    call_command("sync_health", "--role", "worker", stdout=out)

    assert "1 worker process(es)" in out.getvalue()


def test_metrics_and_the_dashboard_show_the_processes(client, admin_client, settings):
    beat(101, ago=2)
    beat(102, ago=300)
    beat(201, role="dispatcher", ago=1)

    metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    page = admin_client.get("/dashboard/").content.decode()

    assert 'recordsync_processes_alive{role="worker"} 1.0' in metrics
    assert 'recordsync_processes_alive{role="dispatcher"} 1.0' in metrics
    assert "recordsync_process_beat_age_seconds" in metrics
    assert "Workers and dispatchers" in page and ">101<" in page and "stalled" in page


def test_the_holder_of_a_lease_is_named_by_host_and_pid():

    owner = leases.lease_owner()

    assert leases.lease_holder(owner) == f"{HOST}:{os.getpid()}"
    assert leases.lease_holder("1234-abc") is None  # a lease taken before leases named their host


def test_a_dead_workers_in_flight_jobs_go_back_at_once_fenced_and_others_stay(settings):
    from crms.models import Connection
    from sync.models import JobState, SyncJob

    target = Connection.objects.create(name="salesforce", kind="salesforce")
    now = timezone.now()

    def job(record_id: str, owner: str) -> SyncJob:
        return SyncJob.objects.create(
            record_id=record_id,
            object_type="Contact",
            source="system_a",
            target=target,
            state=JobState.IN_FLIGHT,
            lease_owner=owner,
            last_occurred_at=now,
            lease_expires_at=now + timedelta(seconds=120),
        )

    beat(11, state="busy", busy_for=5)
    beat(12)
    liveness.process_gone(host=HOST, pid=12)  # its sentinel saw it die
    beat(13, ago=600)  # silent for ten minutes
    job("alive", f"11-a@{HOST}"), job("dead", f"12-b@{HOST}"), job("silent", f"13-c@{HOST}")
    job("unknown", f"14-d@{HOST}"), job("old-format", "15-e")

    assert leases.leases_reap(now=now) == 2

    states = {j.record_id: (j.state, j.fence_until is not None) for j in SyncJob.objects.all()}
    assert states == {
        "alive": ("in_flight", False),
        "dead": ("pending", True),
        "silent": ("pending", True),
        "unknown": ("in_flight", False),
        "old-format": ("in_flight", False),
    }


def test_the_outstanding_batch_limit_follows_the_live_workers(settings):

    settings.SYNC_OUTSTANDING_PER_WORKER, settings.SYNC_OUTSTANDING_BATCHES = 2, 3
    assert leases.outstanding_limit(now=timezone.now()) == 3  # no worker has reported yet
    for pid in (21, 22, 23, 24, 25):
        beat(pid)
    beat(26, ago=120)  # gone

    assert leases.outstanding_limit(now=timezone.now()) == 10


def test_claimed_jobs_a_dead_worker_took_from_the_broker_are_freed_unfenced():
    from crms.models import Connection
    from sync import tasks
    from sync.models import JobClaim, JobState, SyncJob

    target = Connection.objects.create(name="salesforce", kind="salesforce")
    now = timezone.now()
    ids = []
    for n in range(2):
        job = SyncJob.objects.create(
            record_id=f"q-{n}", object_type="Contact", source="system_a", target=target, last_occurred_at=now
        )
        claim = {"owner": f"1-claim@{HOST}", "claimed_at": now, "expires_at": now + timedelta(seconds=120)}
        JobClaim.objects.create(job=job, target=target, lane=job.lane, **claim)
        ids.append(job.pk)
    beat(os.getpid())

    tasks.batch_taken(func=tasks.batch_send, task={"args": [ids]})  # as django-q2's pre_execute sends it
    taken = set(JobClaim.objects.values_list("owner", flat=True))
    untouched = leases.leases_reap(now=now)
    liveness.process_gone(host=HOST, pid=os.getpid())
    reaped = leases.leases_reap(now=now)

    assert len(taken) == 1 and leases.lease_holder(taken.pop()) == f"{HOST}:{os.getpid()}"
    assert (untouched, reaped, JobClaim.objects.count()) == (0, 2, 0)
    assert set(SyncJob.objects.values_list("state", "fence_until")) == {(JobState.PENDING, None)}
