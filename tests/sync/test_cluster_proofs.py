"""Proofs with a real django-q2 cluster (tests/sync/cluster.py) pushing to the mock Salesforce,
served by the live server: workers killed with SIGKILL mid-batch, Redis stopped during ingest,
several workers sharing one rate limit, and the target's fault bursts.

They run on whatever database the suite runs on: a SQLite file with two workers and the ORM
broker on the embedded default, PostgreSQL and Redis with four workers in CI's second run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.utils import timezone

from crms.mocks.models import MockCall, MockRecord
from crms.mocks.runtime import fault_add
from crms.models import Connection
from sync.delivery import liveness
from sync.models import BreakerTransition, JobState, ProcessBeat, SyncAttempt, SyncJob
from sync.ops.config_services import config_override_set
from tests.conftest import mock_salesforce
from tests.sync.cluster import Cluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.proof]

ON_SERVICES = bool(settings.REDIS_URL)
WORKERS = 4 if ON_SERVICES else 2
KEY = "RecordSync_Id__c"


@pytest.fixture
def salesforce(live_server: Any) -> Connection:
    return mock_salesforce(live_server.url, quota_owner="org-proof")


@pytest.fixture
def cluster(tmp_path: Path, salesforce: Connection) -> Iterator[Any]:
    started: list[Cluster] = []

    def start(**env: str) -> Cluster:
        env = {"Q_WORKERS": str(WORKERS), "SYNC_BACKOFF_BASE_SECONDS": "1", "SYNC_BACKOFF_CAP_SECONDS": "3", **env}
        started.append(Cluster(tmp_path, **env).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


def post(api: Any, events: list[dict[str, Any]]) -> int:
    response = api.post("/v1/sync/", data=json.dumps(events), content_type="application/json")
    return int(response.status_code)


def contacts(prefix: str, count: int, version: str = "v1") -> list[dict[str, Any]]:
    return [
        {
            "operation": "create" if version == "v1" else "update",
            "record_id": f"{prefix}{n}",
            "object_type": "Contact",
            "data": {"LastName": f"L{n}", "Email": f"{version}-{prefix}{n}@example.com"},
        }
        for n in range(count)
    ]


def ingest(api: Any, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        assert post(api, events[start : start + 500]) == 202


def states() -> dict[str, int]:
    return dict(Counter(SyncJob.objects.values_list("state", flat=True)))


def all_synced(count: int) -> bool:
    return SyncJob.objects.filter(state=JobState.SYNCED).count() == count


def explain(cluster: Cluster | None = None) -> Any:
    def text() -> str:
        errors = Counter(SyncJob.objects.exclude(last_error_code="").values_list("last_error_code", flat=True))
        return f"jobs: {states()}; errors: {dict(errors)}\n{cluster.output() if cluster else ''}"

    return text


def in_mock() -> dict[str, dict[str, Any]]:
    rows = MockRecord.objects.filter(system="salesforce", object="Contact", deleted_at__isnull=True)
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        assert row.fields[KEY] not in found, f"{row.fields[KEY]} was created twice in the mock"
        found[row.fields[KEY]] = row.fields
    return found


def call_times() -> list[float]:
    arrivals = MockCall.objects.filter(system="salesforce").order_by("at").values_list("at", flat=True)
    return [at.timestamp() for at in arrivals]


# --- kill -9 in the middle of batches ---------------------------------------------------------------


def test_workers_killed_mid_batch_lose_nothing_and_create_nothing_twice(api, cluster, salesforce):
    count = 2000 if ON_SERVICES else 1000
    config_override_set(values={"batch_size": 50}, connection="salesforce", actor="proof")
    ingest(api, contacts("k-", count))
    running = cluster()
    killed: list[int] = []
    updated = False
    deadline = time.monotonic() + 120
    while len(killed) < 4 and time.monotonic() < deadline:
        holders = SyncJob.objects.filter(state=JobState.IN_FLIGHT).values_list("lease_owner", flat=True).distinct()
        workers = running.descendants()
        victim = next((int(o.split("-")[0]) for o in holders if o and int(o.split("-")[0]) in workers), None)
        if victim is None or victim in killed:
            time.sleep(0.02)
            continue
        os.kill(victim, signal.SIGKILL)  # in the middle of its batch: its jobs are in flight under its lease
        killed.append(victim)
        if len(killed) == 2 and not updated:  # newer states arrive while leases are stranded
            ingest(api, contacts("k-", 300, version="v2"))
            updated = True
        time.sleep(1.0)

    wait_for(lambda: all_synced(count), seconds=150, what=f"all {count} jobs synced", explain=explain(running))

    assert len(killed) == 4, f"only {len(killed)} workers were caught mid-batch"
    held = in_mock()
    assert len(held) == count  # every record once: none lost, none created twice
    expected = {f"k-{n}": f"{'v2' if n < 300 else 'v1'}-k-{n}@example.com" for n in range(count)}
    assert {key: fields["Email"] for key, fields in held.items()} == expected  # each record's final state
    assert SyncAttempt.objects.filter(outcome="success").count() >= count


def test_idle_workers_killed_with_sigkill_stop_syncing_for_less_than_a_minute(api, cluster, salesforce):
    """Stock django-q2 shares one queue between its workers: an idle one killed holding its reader lock
    stopped the whole cluster for good (issue 14). Here every idle worker is killed, and syncing goes on."""
    running = cluster()
    ingest(api, contacts("warm-", 20))
    wait_for(lambda: all_synced(20), seconds=60, what="the warm-up synced", explain=explain(running))
    time.sleep(1.0)  # nothing left to do: every worker waits for a task
    idle = running.workers()
    assert len(idle) == WORKERS, idle
    assert not SyncJob.objects.exclude(state=JobState.SYNCED).exists()

    for pid in idle:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    ingest(api, contacts("after-", 200))
    wait_for(lambda: all_synced(220), seconds=60, what="syncing resumed within a minute", explain=explain(running))
    stalled = time.monotonic() - killed_at

    assert len(in_mock()) == 220  # none lost, none created twice
    assert not running.workers() & idle and len(running.workers()) == WORKERS  # replaced, all of them
    assert stalled < 60
    main = running.procs["qcluster"]
    main.send_signal(signal.SIGTERM)
    main.wait(timeout=30)  # and it still stops on SIGTERM


# --- Redis stopped during ingest ---------------------------------------------------------------------


def _redis_address() -> tuple[str, str]:
    parts = urlsplit(settings.REDIS_URL)
    return parts.hostname or "127.0.0.1", str(parts.port or 6379)


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def _redis_up() -> bool:
    host, port = _redis_address()
    answer = subprocess.run([_tool("redis-cli"), "-h", host, "-p", port, "ping"], capture_output=True, check=False)
    return answer.returncode == 0


def _redis_start() -> None:
    """The command the machine itself uses (../shared/SERVICES.md); Redis keeps nothing on disk."""
    host, port = _redis_address()
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            _tool("redis-server"),
            "--daemonize",
            "yes",
            "--bind",
            host,
            "-::1",
            "--port",
            port,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=True,
    )
    wait_for(_redis_up, seconds=30, what="Redis back up")


@pytest.fixture
def redis_outage() -> Iterator[Any]:
    """Stop and start the real Redis; it is running again when the test ends, pass or fail."""

    def stop() -> None:
        host, port = _redis_address()
        subprocess.run(
            [_tool("redis-cli"), "-h", host, "-p", port, "shutdown", "nosave"], capture_output=True, check=False
        )
        wait_for(lambda: not _redis_up(), seconds=10, what="Redis stopped")

    yield stop, _redis_start
    if not _redis_up():
        _redis_start()


@pytest.mark.postgres
@pytest.mark.redis
def test_redis_stopped_during_ingest_fails_no_request_and_the_jobs_drain_once_it_is_back(
    api, cluster, salesforce, redis_outage
):
    stop_redis, start_redis = redis_outage
    running = cluster()
    answers: list[int] = []
    events = contacts("r-", 600)
    for n, start in enumerate(range(0, 600, 25)):
        if n == 6:
            stop_redis()
        if n == 18:
            start_redis()
        answers.append(post(api, events[start : start + 25]))

    assert answers == [202] * 24  # a third of them while Redis was down
    wait_for(lambda: all_synced(600), seconds=120, what="all 600 jobs synced", explain=explain(running))
    assert len(in_mock()) == 600


# --- several workers, one allowance ------------------------------------------------------------------


def test_workers_together_never_exceed_n_calls_per_window_and_use_most_of_it(api, cluster, salesforce):
    limit, window = 16, 4
    config_override_set(
        values={"batch_size": 5, "rate_limit_calls": limit, "rate_limit_window": window},
        connection="salesforce",
        actor="proof",
    )
    count = 400  # 80 Collections calls: about 20 s at 16 per 4 s
    ingest(api, contacts("t-", count))
    running = cluster()

    wait_for(lambda: all_synced(count), seconds=120, what=f"all {count} jobs synced", explain=explain(running))

    times = call_times()  # arrival times in the mock's own log
    busiest = max(bisect_left(times, start + window) - i for i, start in enumerate(times))
    # Every window of W seconds that lies inside the backlog (which lasts until the last call),
    # sampled every 10 ms: the mean share of the N calls each one held.
    starts = [times[0] + step / 100 for step in range(int((times[-1] - window - times[0]) * 100) + 1)]
    used = sum(bisect_left(times, s + window) - bisect_left(times, s) for s in starts) / (len(starts) * limit)
    print(f"PROOF busiest={busiest} used={used:.3f} calls={len(times)}")
    assert busiest <= limit, f"{busiest} calls within {window} s"
    assert used >= 0.9, f"only {used:.0%} of the allowance used with a backlog waiting"
    assert len(in_mock()) == count


# --- the target misbehaves ---------------------------------------------------------------------------


def calls_during(moment: datetime, seconds: float) -> list[str]:
    """Calls that arrived while a pause starting at `moment` should hold. A call granted before the
    pause was heard may still land just after it (workers run at once): 0.25 s is left for those."""
    start, end = moment + timedelta(seconds=0.25), moment + timedelta(seconds=seconds - 0.1)
    return [
        f"{c.at.isoformat()} {c.status}" for c in MockCall.objects.filter(system="salesforce", at__gt=start, at__lt=end)
    ]


def _fault_calls(status: int) -> list[MockCall]:
    return list(MockCall.objects.filter(system="salesforce", status=status).order_by("at"))


def test_a_429_burst_is_waited_out_by_every_worker_and_nothing_fails(api, cluster, salesforce):
    config_override_set(values={"batch_size": 5}, connection="salesforce", actor="proof")
    fault_add(system="salesforce", calls=3, seconds=None, status=429, retry_after=3)
    ingest(api, contacts("q-", 60))
    running = cluster()

    wait_for(lambda: all_synced(60), seconds=90, what="all jobs synced", explain=explain(running))

    limited = _fault_calls(429)
    assert len(limited) == 3
    for answer in limited:  # Retry-After obeyed by every worker, not only the one that got it
        assert calls_during(answer.at, 3) == [], f"called during the pause after the 429 at {answer.at}"
    assert SyncAttempt.objects.filter(http_status=429, permanent=False).exists()
    assert len(in_mock()) == 60


def test_a_5xx_burst_opens_the_breaker_then_one_probe_closes_it(api, cluster, salesforce):
    config_override_set(
        values={"batch_size": 5, "breaker_failures": 3, "breaker_cooldown": 2}, connection="salesforce", actor="proof"
    )
    fault_add(system="salesforce", calls=4, seconds=None, status=503)
    ingest(api, contacts("f-", 60))
    running = cluster()

    wait_for(lambda: all_synced(60), seconds=90, what="all jobs synced", explain=explain(running))

    path = list(
        BreakerTransition.objects.filter(connection=salesforce)
        .order_by("at", "id")
        .values_list("from_state", "to_state")
    )
    assert path[0] == ("closed", "open") and path[-1] == ("half_open", "closed"), path
    assert ("open", "half_open") in path
    opened = BreakerTransition.objects.filter(connection=salesforce, to_state="open").order_by("at").first()
    assert opened is not None
    assert calls_during(opened.at, 2) == []  # no call while open, then one probe
    assert not SyncJob.objects.filter(state=JobState.FAILED).exists()
    assert len(in_mock()) == 60


def test_request_limit_exceeded_pauses_the_connection_then_it_resumes(api, cluster, salesforce):
    config_override_set(values={"batch_size": 5, "breaker_cooldown": 2}, connection="salesforce", actor="proof")
    fault_add(system="salesforce", calls=1, seconds=None, status=403, code="REQUEST_LIMIT_EXCEEDED")
    ingest(api, contacts("l-", 40))
    running = cluster(SALESFORCE_LIMIT_PAUSE_SECONDS="4")

    wait_for(lambda: all_synced(40), seconds=90, what="all jobs synced", explain=explain(running))

    (refused,) = _fault_calls(403)
    assert calls_during(refused.at, 4) == []  # paused, for every worker
    opened = BreakerTransition.objects.filter(connection=salesforce, to_state="open").order_by("at").first()
    assert opened is not None and "REQUEST_LIMIT_EXCEEDED" in opened.reason  # opened at once, by one answer
    assert not SyncJob.objects.filter(state=JobState.FAILED).exists()
    assert len(in_mock()) == 40


def test_a_run_of_timeouts_is_retried_and_the_repeat_is_an_upsert_of_the_same_state(api, cluster, salesforce):
    config_override_set(
        values={"batch_size": 10, "breaker_failures": 3, "breaker_cooldown": 2}, connection="salesforce", actor="proof"
    )
    fault_add(system="salesforce", calls=3, seconds=None, latency_ms=2500)
    ingest(api, contacts("o-", 40))
    running = cluster(CRM_HTTP_READ_TIMEOUT="1")

    wait_for(lambda: all_synced(40), seconds=90, what="all jobs synced", explain=explain(running))

    timeouts = SyncAttempt.objects.filter(error_code="timeout", permanent=False)
    assert timeouts.exists(), explain(running)()
    timed_out = set(timeouts.values_list("job_id", flat=True))
    tries = Counter(SyncAttempt.objects.filter(job_id__in=timed_out).values_list("job_id", flat=True))
    assert all(tries[job] >= 2 for job in timed_out)  # each tried again after its timeout
    assert len(in_mock()) == 40  # the timed-out calls were written by the mock too: the repeats updated them
    assert not SyncJob.objects.filter(state=JobState.FAILED).exists()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its dead parent to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- stopping ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("whole_group", [False, True], ids=["sigterm-to-qcluster", "sigterm-to-every-process"])
def test_sigterm_mid_batch_finishes_the_batch_or_hands_its_leases_back(api, cluster, salesforce, whole_group):
    config_override_set(values={"batch_size": 10}, connection="salesforce", actor="proof")
    fault_add(system="salesforce", calls=2, seconds=None, latency_ms=3000)  # two batches stay in flight 3 s
    ingest(api, contacts("s-", 40))
    running = cluster()
    wait_for(
        lambda: SyncJob.objects.filter(state=JobState.IN_FLIGHT).exists(),
        seconds=30,
        what="a batch in flight",
        explain=explain(running),
    )
    time.sleep(0.5)
    in_flight = set(SyncJob.objects.filter(state=JobState.IN_FLIGHT).values_list("id", flat=True))

    dispatcher = running.procs["dispatch"]  # stopped first, as in a shutdown: nothing is queued again
    dispatcher.send_signal(signal.SIGTERM)
    dispatcher.wait(timeout=30)
    main = running.procs["qcluster"]
    workers = running.descendants()
    targets = [main.pid, *(workers if whole_group else ())]
    for pid in targets:  # the cluster's main process only (docker stop), or all of them (systemd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    # Signalled all at once, stock django-q2's main process hung for good (its Event's notify_all() waited
    # for a sentinel that died mid-wait); the whole cluster exits now.
    main.wait(timeout=60)
    wait_for(
        lambda: not any(_alive(pid) for pid in workers),
        seconds=10,
        what="every worker exited",
        explain=explain(running),
    )

    stranded = SyncJob.objects.filter(id__in=in_flight, state=JobState.IN_FLIGHT)
    assert not stranded.exists(), explain(running)()
    after = dict(Counter(SyncJob.objects.filter(id__in=in_flight).values_list("state", flat=True)))
    if not whole_group:
        assert after == {JobState.SYNCED: len(in_flight)}  # the batches in flight were finished
    else:
        assert set(after) <= {JobState.SYNCED, JobState.PENDING}  # finished, or handed back at once


def test_a_call_cut_off_by_sigterm_never_lands_after_a_newer_state(api, cluster, salesforce):
    """SIGTERM reaches the workers while their call is out (systemd's control-group, a task timeout): the
    call may still land after they hand the jobs back. The jobs are fenced until it no longer can, so a
    newer state sent afterwards is what the CRM keeps (issue 14: it kept the older one)."""
    quick = {"CRM_HTTP_CONNECT_TIMEOUT": "1", "CRM_HTTP_READ_TIMEOUT": "6"}  # a fence of 12 s after the call began
    config_override_set(values={"batch_size": 10}, connection="salesforce", actor="proof")
    ingest(api, contacts("f-", 10))
    first = cluster(**quick)
    wait_for(lambda: all_synced(10), seconds=60, what="the creates synced", explain=explain(first))
    fault_add(system="salesforce", calls=1, seconds=None, latency_ms=4000)  # the next call lands 4 s late
    ingest(api, contacts("f-", 10, version="v2"))
    wait_for(
        lambda: SyncJob.objects.filter(state=JobState.IN_FLIGHT).exists(),
        seconds=30,
        what="the v2 batch in flight",
        explain=explain(first),
    )
    time.sleep(0.5)
    first.procs["dispatch"].send_signal(signal.SIGTERM)
    workers = first.workers()
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=30, what="the workers exited")
    first.stop()

    ingest(api, contacts("f-", 10, version="v3"))  # newer than what the cut-off call carries
    second = cluster(**quick)
    wait_for(lambda: all_synced(10), seconds=60, what="v3 synced", explain=explain(second))
    time.sleep(5)  # long past the cut-off call's 4 s, had it been going to land late

    assert {fields["Email"] for fields in in_mock().values()} == {f"v3-f-{n}@example.com" for n in range(10)}


def test_a_wedged_cluster_is_reported_not_alive_and_alive_again_once_it_moves(cluster, salesforce, monkeypatch):
    """What compose, ECS and make run act on: every worker frozen (SIGSTOP, as a wedged process looks)
    makes `sync_health --role worker` fail; once they move again, it passes."""
    monkeypatch.setattr(liveness, "STALE_SECONDS", 12.0)  # idle workers beat every 5 s
    running = cluster()
    # Every worker forked and beating before any is frozen: health turns ok with the first beat, while the
    # sentinel may still be forking the others, and one left out beats on (CI saw it, 2026-12-07).
    wait_for(
        lambda: (
            len(running.workers()) == WORKERS
            and liveness.alive("worker", now=timezone.now()).filter(pid__in=running.workers()).count() == WORKERS
        ),
        seconds=30,
        what="every worker forked and beating",
        explain=explain(running),
    )
    workers = running.workers()

    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        wedged = wait_for(
            lambda: not liveness.health(role="worker", host=liveness.host_name(), now=timezone.now()).ok,
            seconds=30,
            what="the frozen cluster reported not alive",
            explain=lambda: (
                f"frozen: {sorted(workers)}; now: {sorted(running.workers())}; beats: "
                + str(list(ProcessBeat.objects.values_list("pid", "role", "state", "beat_at")))
                + f"\n{running.output()}"
            ),
        )
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    wait_for(
        lambda: liveness.health(role="worker", host=liveness.host_name(), now=timezone.now()).ok,
        seconds=20,
        what="alive again",
        explain=explain(running),
    )

    assert wedged


def test_a_busy_worker_killed_gives_its_batch_back_long_before_its_lease_runs_out(api, cluster, salesforce):
    """Its sentinel sees it die and marks it dead; the dispatcher hands its jobs back at once, fenced for
    the call it had out, instead of after the 120 s lease (issue 14: four kills stalled a connection 2 min)."""
    quick = {"SYNC_LEASE_SECONDS": "120", "CRM_HTTP_CONNECT_TIMEOUT": "1", "CRM_HTTP_READ_TIMEOUT": "6"}
    config_override_set(values={"batch_size": 10}, connection="salesforce", actor="proof")
    running = cluster(**quick)
    wait_for(
        lambda: liveness.alive("worker", now=timezone.now()).count() >= WORKERS,
        seconds=30,
        what="every worker beating",
        explain=explain(running),
    )
    fault_add(system="salesforce", calls=1, seconds=None, latency_ms=4000)
    ingest(api, contacts("b-", 10))
    holder = wait_for(
        lambda: SyncJob.objects.filter(state=JobState.IN_FLIGHT).values_list("lease_owner", flat=True).first(),
        seconds=30,
        what="the batch in flight",
        explain=explain(running),
    )

    os.kill(int(holder.split("-")[0]), signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: all_synced(10), seconds=60, what="the batch synced", explain=explain(running))

    assert time.monotonic() - killed_at < 40  # the fence (12 s) and a resend, not the 120 s lease
    assert len(in_mock()) == 10


# --- lanes: a backfill at the limit, a live change through on time (issue 18) --------------------------


def test_a_backfill_at_the_limit_delays_a_live_change_by_no_more_than_the_flush_interval_plus_two_seconds(
    api, cluster, salesforce
):
    """50,000 records backfilled by `sync_backfill` from System A wait in the backfill lane while the cluster
    sends them at the rate limit; live changes posted meanwhile are claimed first and find the live reserve of
    the window free. Each is synced within the flush interval plus two seconds of being accepted."""
    from django.core.management import call_command

    from crms.selectors import connections_forget
    from sync.models import Lane, SyncEvent

    count, limit, window, flush = 50_000, 10, 2, 1
    Connection.objects.filter(pk=salesforce.pk).update(enabled=False)  # System A's history, sent nowhere yet
    connections_forget()
    ingest(api, contacts("bf-", count))
    Connection.objects.filter(pk=salesforce.pk).update(enabled=True)
    connections_forget()
    salesforce.refresh_from_db()
    salesforce.config = {**salesforce.config, "bulk_threshold": count * 2}  # through the engine, not Bulk jobs
    salesforce.save(update_fields=["config"])
    config_override_set(
        values={"batch_size": 5, "flush_interval": flush, "rate_limit_calls": limit, "rate_limit_window": window},
        connection="salesforce",
        actor="proof",
    )
    call_command("sync_backfill", "--from", "system_a", "--to", "salesforce", "--object", "Contact", "--batch", "5000")
    assert SyncJob.objects.filter(lane=Lane.BULK, state=JobState.PENDING).count() == count

    running = cluster()
    wait_for(
        lambda: SyncJob.objects.filter(state=JobState.SYNCED).count() >= 3 * limit * 5,
        seconds=60,
        what="the backfill sending at the limit",
        explain=explain(running),
    )
    delays: list[float] = []
    for n in range(5):
        time.sleep(0.7 * n)  # at different points of the window
        assert post(api, contacts(f"live-{n}-", 1)) == 202
        synced = SyncJob.objects.filter(record_id=f"live-{n}-0", state=JobState.SYNCED)
        job = wait_for(
            synced.first,
            seconds=30,
            what=f"live-{n} synced",
            explain=explain(running),
        )
        accepted = SyncEvent.objects.get(record_id=f"live-{n}-0").received_at
        delays.append((job.synced_at - accepted).total_seconds())
    backlog = SyncJob.objects.filter(lane=Lane.BULK).exclude(state=JobState.SYNCED).count()
    running.stop()

    times = call_times()
    busiest = max(bisect_left(times, start + window) - i for i, start in enumerate(times))
    print(f"PROOF lanes delays={[round(d, 2) for d in delays]} busiest={busiest} backlog_left={backlog}")
    assert backlog > count - 5_000, "the backfill was not still running when the live changes came"
    assert busiest <= limit, f"{busiest} calls within {window} s"
    assert max(delays) <= flush + 2, f"live changes took {delays} s behind a backfill at the limit"
