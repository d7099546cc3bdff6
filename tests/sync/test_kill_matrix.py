"""Any single process may die at any moment (issue 14). `make run`'s supervisor (recordsync/devrun.py) runs
the web server, the worker cluster and the dispatcher on this test's database (with Redis in CI's second
run); the mock Salesforce is this test's live server, a system apart that no kill touches. While
thousands of records drain, every kind of process is killed with SIGKILL, twice over; on PostgreSQL, the
database server itself is restarted. The report: records lost, created twice or left stale (all 0) and the
longest time syncing stood still (at most 60 s), with what the jobs and processes looked like through it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.db import DatabaseError
from django.db import connection as db
from django.utils import timezone

from crms.mocks.models import MockRecord
from crms.mocks.runtime import fault_add
from sync.api.auth import api_token_create
from sync.delivery import liveness
from sync.models import JobClaim, JobState, ProcessBeat, SyncJob
from sync.ops.config_services import config_override_set
from tests.conftest import mock_salesforce
from tests.sync.cluster import ROOT, _parents, database_url, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.proof]
RECORDS = 2000
UPDATED = 500  # of them, changed again while the kills go on
KINDS = ("web", "dispatcher", "cluster", "sentinel", "idle worker", "busy worker")
KEY = "RecordSync_Id__c"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    """`python -m recordsync.devrun`, and the processes under it by kind."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "devrun.log"
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "PORT": str(self.port),
            "DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
            "MOCK_CRMS_ENABLED": "1",
            "ALLOWED_HOSTS": "127.0.0.1",
            "Q_CLUSTER_NAME": f"matrix-{uuid.uuid4().hex[:8]}",
            "SYNC_FLUSH_INTERVAL": "0",
            "SYNC_POLL_INTERVAL": "0",
            "SYNC_LEASE_SECONDS": "120",
            "CRM_HTTP_CONNECT_TIMEOUT": "1",
            "CRM_HTTP_READ_TIMEOUT": "6",
            "MOCK_SALESFORCE_DAILY_LIMIT": "1000000",
            "Q_WORKERS": "2",
        }
        if settings.REDIS_URL:
            env["REDIS_URL"] = settings.REDIS_URL
        else:
            env.pop("REDIS_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recordsync.devrun"],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        lines = [line for line in self.log.read_text().splitlines() if not line.startswith('{"level": "INFO"')]
        children = {pid: self._command(pid) for pid, parent in _parents().items() if parent == self.proc.pid}
        return "\n".join(lines[-60:]) + f"\nchildren now: {children}"

    @staticmethod
    def _command(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "?"

    def pid_of(self, kind: str) -> int | None:
        parents = _parents()
        children = {pid for pid, parent in parents.items() if parent == self.proc.pid}
        roles: dict[str, int] = {}
        for pid in children:
            command = self._command(pid)
            for role, marker in (("web", "runserver"), ("cluster", "sync_cluster"), ("dispatcher", "sync_dispatch")):
                if marker in command:
                    roles[role] = pid
        if kind in roles:
            return roles[kind]
        sentinels = {pid for pid, parent in parents.items() if parent == roles.get("cluster")}
        workers = {pid for pid, parent in parents.items() if parent in sentinels}
        if kind == "sentinel":
            return next(iter(sentinels), None)
        busy = {
            int(o.split("-")[0])
            for o in SyncJob.objects.filter(state=JobState.IN_FLIGHT)
            .exclude(lease_owner="")
            .values_list("lease_owner", flat=True)
        }
        chosen = workers & busy if kind == "busy worker" else workers - busy
        return next(iter(chosen), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid, parent in _parents().items():
            if parent == self.proc.pid:
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    yield running
    running.stop()


def post(stack: Stack, token: str, events: list[dict[str, Any]]) -> list[int]:
    """As a client does: the web process (or its database) may be down for a moment, so retry with the same
    key. Answers the statuses seen before the 202 (0: no answer at all)."""
    key = uuid.uuid4().hex
    headers = {"Authorization": f"Token {token}", "Idempotency-Key": key, "Content-Type": "application/json"}
    deadline = time.monotonic() + 60
    seen: list[int] = []
    while True:
        try:
            answer = requests.post(f"{stack.url}/v1/sync/", data=json.dumps(events), headers=headers, timeout=30)
            if answer.status_code == 202:
                return seen
            assert answer.status_code == 503, f"{answer.status_code}: {answer.text[:500]}"
            assert answer.headers.get("Retry-After") and answer.json()["error"]["code"] == "service_unavailable"
            seen.append(503)
        except requests.RequestException:
            seen.append(0)
        assert time.monotonic() < deadline, f"no 202 within 60 s\n{stack.output()}"
        time.sleep(0.5)


def contacts(start: int, stop: int, version: str) -> list[dict[str, Any]]:
    return [
        {
            "operation": "create" if version == "v1" else "update",
            "record_id": f"m-{n}",
            "object_type": "Contact",
            "data": {"LastName": f"L{n}", "Email": f"{version}-m-{n}@example.com"},
        }
        for n in range(start, stop)
    ]


class Progress:
    """Samples the synced count (and, for the report, the jobs' states and the live processes) twice a second.
    A sample taken while the database is away keeps the last count: syncing stood still then too."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, str]] = []

    def sample(self) -> int:
        at = time.monotonic()
        try:
            count = SyncJob.objects.filter(state=JobState.SYNCED).count()
            picture = self._picture()
        except DatabaseError as exc:
            db.close()  # a restarted server dropped this connection: the next sample opens a new one
            count = self.samples[-1][1] if self.samples else 0
            picture = f"database unreachable ({type(exc).__name__})"
        self.samples.append((at, count, picture))
        return count

    def watch(self, seconds: float) -> None:
        for _ in range(int(seconds * 2)):
            self.sample()
            time.sleep(0.5)

    def drain(self, records: int, seconds: float = 240) -> None:
        deadline = time.monotonic() + seconds
        while self.sample() < records and time.monotonic() < deadline:
            time.sleep(0.5)

    @staticmethod
    def _picture() -> str:
        now = timezone.now()
        by_state = dict(Counter(SyncJob.objects.values_list("state", flat=True)))
        fenced = SyncJob.objects.filter(fence_until__gt=now).count()
        workers = liveness.alive("worker", now=now).count()
        dispatchers = liveness.alive("dispatcher", now=now).count()
        return (
            f"jobs {by_state}, fenced {fenced}; alive: {workers} workers, {dispatchers} dispatchers"
            f"{Progress._holders(now)}"
        )

    @staticmethod
    def _holders(now: Any) -> str:
        """Whose leases the held jobs carry, and what each holder's heartbeat says: a stall's first question."""
        owners = Counter(
            SyncJob.objects.filter(state=JobState.IN_FLIGHT).exclude(lease_owner="").values_list("state", "lease_owner")
        )
        owners.update(("claimed", owner) for owner in JobClaim.objects.values_list("owner", flat=True))
        pids = {owner.partition("-")[0] for _, owner in owners}
        beats = {
            str(beat.pid): beat for beat in ProcessBeat.objects.filter(pid__in=[int(p) for p in pids if p.isdigit()])
        }
        parts = []
        for (state, owner), count in sorted(owners.items()):
            pid = owner.partition("-")[0]
            beat = beats.get(pid)
            seen = f"{beat.state} {(now - beat.beat_at).total_seconds():.0f}s ago" if beat else "no beat"
            parts.append(f"{count} {state} by {pid} ({seen})")
        return f"; held: {', '.join(parts)}" if parts else ""

    def stalls(self) -> list[tuple[float, float]]:
        """Each stretch the synced count stood still, as (start, length) in monotonic seconds."""
        found: list[tuple[float, float]] = []
        since = 0
        for i in range(1, len(self.samples) + 1):
            if i == len(self.samples) or self.samples[i][1] != self.samples[i - 1][1]:
                found.append((self.samples[since][0], self.samples[i - 1][0] - self.samples[since][0]))
                since = i
        return found

    def per_kill(self, kills: list[tuple[str, float]]) -> str:
        """For each kill, the longest stall that began between it and the next one (or the end)."""
        lines = []
        for n, (kind, at) in enumerate(kills):
            until = kills[n + 1][1] if n + 1 < len(kills) else float("inf")
            # A stall under way when the process died counts for it too.
            longest = max(
                (length for start, length in self.stalls() if start < until and start + length >= at), default=0.0
            )
            lines.append(f"  {kind:<12} longest stall {longest:5.1f} s")
        return "\n".join(lines)

    def longest_stall(self) -> tuple[float, str]:
        """The longest time the synced count stood still, and the distinct pictures seen through it."""
        stall, since, worst = 0.0, 0, (0, 0)
        for i in range(1, len(self.samples)):
            if self.samples[i][1] != self.samples[i - 1][1]:
                since = i
            if self.samples[i][0] - self.samples[since][0] > stall:
                stall, worst = self.samples[i][0] - self.samples[since][0], (since, i)
        first = self.samples[worst[0]][0] if self.samples else 0.0
        seen: list[str] = []
        for at, _, picture in self.samples[worst[0] : worst[1] + 1]:
            if not seen or not seen[-1].endswith(picture):
                seen.append(f"+{at - first:.1f} s {picture}")
        return stall, "\n".join(seen)


def tally(records: int, updated: int) -> tuple[int, int, int]:
    """Records lost, created twice, and left holding an older state than the newest sent, in the mock."""
    rows = list(MockRecord.objects.filter(system="salesforce", object="Contact", deleted_at__isnull=True))
    keys = [row.fields.get(KEY) for row in rows]
    newest = {f"m-{n}": f"{'v2' if n < updated else 'v1'}-m-{n}@example.com" for n in range(records)}
    held = {row.fields.get(KEY): row.fields.get("Email") for row in rows}
    lost = len(set(newest) - set(keys))
    twice = len(keys) - len(set(keys))
    stale = sum(1 for key, email in newest.items() if key in held and held[key] != email)
    return lost, twice, stale


def drain_start(stack: Stack, live_server: Any) -> str:
    mock_salesforce(live_server.url)
    config_override_set(values={"batch_size": 20}, connection="salesforce", actor="proof")
    fault_add(system="salesforce", calls=None, seconds=600, latency_ms=500)  # slow: the drain outlasts the faults
    token = api_token_create(username="matrix")
    wait_for(lambda: stack.pid_of("idle worker"), seconds=60, what="the stack up", explain=stack.output)
    for start in range(0, RECORDS, 500):
        post(stack, token, contacts(start, start + 500, "v1"))
    return token


def judged(
    what: str,
    progress: Progress,
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    kills: list[tuple[str, float]] | None = None,
) -> None:
    lost, twice, stale = tally(RECORDS, UPDATED)
    stall, through = progress.longest_stall()
    report = f"{what}; lost {lost}, created twice {twice}, stale {stale}, longest stall {stall:.1f} s"
    each = f"\nper kill:\n{progress.per_kill(kills)}" if kills else ""
    with capsys.disabled():  # in every run's output, CI's included: the figures the closing notes quote
        print(f"\nPROOF ({db.vendor}) {report}{each}\nthrough the longest stall:\n{through}")
    assert (lost, twice, stale) == (0, 0, 0), f"{report}\n{stack.output()}"
    assert stall <= 60, f"{report}\nthrough it:\n{through}\n{stack.output()}"


def test_every_kind_of_process_killed_during_a_drain_loses_nothing(
    stack: Stack, live_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    token = drain_start(stack, live_server)
    progress = Progress()
    killed: list[tuple[str, int]] = []
    kills: list[tuple[str, float]] = []
    for round_ in range(2):
        for kind in KINDS:

            def found(kind: str = kind) -> int | None:
                return stack.pid_of(kind)

            pid = wait_for(found, seconds=30, what=f"a {kind} to kill", explain=stack.output)
            os.kill(pid, signal.SIGKILL)
            killed.append((kind, pid))
            kills.append((kind, time.monotonic()))
            progress.watch(2)  # 2 s between kills
            if round_ == 0 and kind == "cluster":
                post(stack, token, contacts(0, UPDATED, "v2"))  # newer states while processes die
    progress.drain(RECORDS)

    judged(f"killed {killed}", progress, stack, capsys, kills)
    assert len(killed) == 2 * len(KINDS)


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def _postgres(action: str) -> list[str]:
    """The machine's own command for its one cluster (../shared/SERVICES.md)."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return [_tool("pg_ctlcluster"), "--skip-systemctl-redirect", version, "main", action]


def _postgres_up() -> bool:
    answer = subprocess.run([_tool("pg_isready"), "-q", "-h", "127.0.0.1"], check=False)
    return answer.returncode == 0


@pytest.fixture
def postgres_restart() -> Iterator[Any]:
    """Restart the real PostgreSQL (../shared/SERVICES.md's command); it is up again when the test ends, pass or
    fail. Fast mode: every session is cut at once, as a crash or a failover does."""

    def restart() -> float:
        started = time.monotonic()
        subprocess.run([*_postgres("restart"), "-m", "fast"], check=True, capture_output=True)
        wait_for(_postgres_up, seconds=60, what="PostgreSQL back up")
        return time.monotonic() - started

    yield restart
    if not _postgres_up():
        subprocess.run(_postgres("start"), check=False)
        wait_for(_postgres_up, seconds=60, what="PostgreSQL back up")
    db.close()


@pytest.mark.postgres
def test_postgresql_restarted_during_a_drain_loses_nothing(
    stack: Stack, live_server: Any, postgres_restart: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert db.vendor == "postgresql"
    token = drain_start(stack, live_server)
    progress = Progress()
    wait_for(lambda: progress.sample() >= 100, seconds=60, what="a first hundred synced", explain=stack.output)
    with ThreadPoolExecutor(1) as side:
        restarting = side.submit(postgres_restart)
        time.sleep(0.2)
        answers = post(stack, token, contacts(0, UPDATED, "v2"))  # newer states, posted through the restart
        down = restarting.result()
    progress.drain(RECORDS)

    judged(f"PostgreSQL restarted ({down:.1f} s); answers before the 202: {answers}", progress, stack, capsys)
