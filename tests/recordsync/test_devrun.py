"""`make run`'s process runner is a supervisor: any one of its processes killed with SIGKILL is started
again within seconds, and Ctrl-C (SIGINT) still stops everything cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from crms.hubspot import mock as hubspot_mock
from crms.outreach import mock as outreach_mock
from crms.salesforce import mock as salesforce_mock
from crms.systema import mock as system_a_mock
from tests.sync.cluster import ROOT, database_url, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.proof]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def roles(supervisor: int) -> dict[str, int]:
    """The supervisor's children by role, from /proc."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if parent == supervisor:
            for role, marker in (("web", "runserver"), ("worker", "sync_cluster"), ("dispatcher", "sync_dispatch")):
                if marker in command:
                    found[role] = int(entry.name)
    return found


@pytest.fixture
def supervisor(tmp_path: Path) -> Any:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        "SYNC_POLL_INTERVAL": "0",
        "Q_CLUSTER_NAME": "devrun-proof",
        "DEBUG": "1",  # as make run's .env has it (runserver refuses to start otherwise without ALLOWED_HOSTS)
    }
    env.pop("REDIS_URL", None)  # the embedded default, as make run has it
    log = (tmp_path / "devrun.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "recordsync.devrun"], cwd=ROOT, env=env, stdout=log, stderr=log)
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    for pid in roles(proc.pid).values():
        os.killpg(pid, signal.SIGKILL)


def test_each_process_killed_with_sigkill_is_started_again(supervisor, tmp_path):
    def explain() -> str:
        text: str = (tmp_path / "devrun.log").read_text()
        return text[-3000:]

    time.sleep(3)  # settled: nothing restarting from a slow first start
    started = wait_for(
        lambda: (r := roles(supervisor.pid)) and len(r) == 3 and r,
        seconds=30,
        what="web, worker and dispatcher running",
        explain=explain,
    )
    web = Path(f"/proc/{started['web']}/cmdline").read_bytes()
    assert b"runserver\x00127.0.0.1:" in web, web  # loopback only unless BIND says otherwise (issue 15)
    for role in ("dispatcher", "worker", "web"):
        os.kill(started[role], signal.SIGKILL)

        def replaced(role: str = role) -> bool:
            return roles(supervisor.pid).get(role) not in (None, started[role])

        wait_for(replaced, seconds=10, what=f"the {role} started again", explain=explain)

    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(timeout=40) == 0, explain()
    assert explain().count("starting it again") == 3  # the three killed, nothing else
    assert roles(supervisor.pid) == {}


def test_a_role_failing_its_liveness_check_three_times_in_a_row_is_restarted(monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from recordsync import devrun
    from sync.delivery import liveness
    from sync.models import ProcessBeat

    now = [0.0]
    monkeypatch.setattr(devrun.Liveness, "clock", staticmethod(lambda: now[0]))
    checker = devrun.Liveness()
    checker.restarted("worker")
    checker.restarted("dispatcher")
    host = liveness.host_name()
    ProcessBeat.objects.create(key=f"{host}:1", role="dispatcher", host=host, pid=1, beat_at=timezone.now())
    ProcessBeat.objects.create(
        key=f"{host}:2", role="worker", host=host, pid=2, beat_at=timezone.now() - timedelta(minutes=5)
    )

    verdicts = []
    for step in range(1, 7):  # a check every 15 s, after the 45 s grace
        now[0] = step * devrun.HEALTH_EVERY_SECONDS
        verdicts.append(checker.stalled())

    assert verdicts == [[], [], [], [], ["worker"], ["worker"]]  # grace, then the third failure in a row


def test_make_run_writes_its_own_random_secrets_for_the_mocks(tmp_path: Path) -> None:
    """`make run` never serves the mocks with their well-known default secrets (issue 15)."""
    from django.conf import settings

    written = []
    for run in ("first", "second"):
        folder = tmp_path / run
        folder.mkdir()
        make = ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(folder), ".env", f"PYTHON={sys.executable}"]
        subprocess.run(make, check=True, capture_output=True)
        lines = (folder / ".env").read_text().splitlines()
        written.append(dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")))
    # Each secret setting against the default its mock falls back on (no such variable in this process).
    defaults = {
        "SECRET_KEY": settings.SECRET_KEY,
        "MOCK_SALESFORCE_CLIENT_SECRET": salesforce_mock.app_client_secret(),
        "MOCK_OUTREACH_CLIENT_SECRET": outreach_mock.app_client_secret(),
        "MOCK_OUTREACH_REFRESH_TOKEN": outreach_mock.first_refresh_token(),
        "MOCK_SYSTEM_A_SIGNING_SECRET": system_a_mock.signing_secret(),
        "MOCK_HUBSPOT_CLIENT_SECRET": hubspot_mock.app_client_secret(),
        "MOCK_HUBSPOT_PRIVATE_APP_TOKEN": hubspot_mock.private_app_token(),
        "MOCK_HUBSPOT_REFRESH_TOKEN": hubspot_mock.first_refresh_token(),
    }
    for name, default in defaults.items():
        first, second = written[0][name], written[1][name]
        assert len(first) >= 40 and first != second, name
        assert first != default, f"{name} is the built-in default"
    assert written[0]["DEBUG"] == "1"
