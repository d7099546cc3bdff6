"""`make run`'s process runner is a supervisor: any one of its processes killed with SIGKILL is started
again within seconds, and Ctrl-C (SIGINT) still stops everything cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sync.cluster import ROOT, database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


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

    started = wait_for(
        lambda: (r := roles(supervisor.pid)) and len(r) == 3 and r,
        seconds=30,
        what="web, worker and dispatcher running",
        explain=explain,
    )
    for role in ("dispatcher", "worker", "web"):
        os.kill(started[role], signal.SIGKILL)

        def replaced(role: str = role) -> bool:
            return roles(supervisor.pid).get(role) not in (None, started[role])

        wait_for(replaced, seconds=10, what=f"the {role} started again", explain=explain)

    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(timeout=40) == 0, explain()
    assert roles(supervisor.pid) == {}
