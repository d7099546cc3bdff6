"""A real django-q2 cluster for the proofs: `manage.py qcluster` and `manage.py sync_dispatch` as
subprocesses on this test's own database (and Redis when REDIS_URL is set), so the tests can
kill, stop and starve them. django-q2's `sync` mode would run tasks inline and prove nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """This test's database (the test copy, not the one named in DATABASE_URL)."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    user = quote(config.get("USER") or "")
    password = f":{quote(config['PASSWORD'])}" if config.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{config['NAME']}"


class Cluster:
    """The worker cluster and the dispatcher, with their output kept for the failure message."""

    def __init__(self, logs: Path, **env: str) -> None:
        self.logs = logs
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "Q_CLUSTER_NAME": f"proof-{uuid.uuid4().hex[:8]}",  # its own queue: stray nudges stay out
            "SYNC_LEASE_SECONDS": "10",
            "SYNC_FLUSH_INTERVAL": "0",
            "SYNC_POLL_INTERVAL": "0",  # these proofs are about pushes: no poll takes a fault or a slot
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        if settings.REDIS_URL:
            self.env["REDIS_URL"] = settings.REDIS_URL
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> Cluster:
        for name, args in (("qcluster", ["sync_cluster"]), ("dispatch", ["sync_dispatch", "--interval", "0.25"])):
            log = (self.logs / f"{name}.log").open("ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    def stop(self) -> None:
        """SIGTERM to the cluster's main process (it stops its workers in order), then kill what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def descendants(self) -> set[int]:
        """Every process under the cluster (the sentinel and its workers), from /proc."""
        parents = _parents()
        found: set[int] = set()
        frontier = {self.procs["qcluster"].pid}
        while frontier:
            children = {pid for pid, parent in parents.items() if parent in frontier}
            found |= children
            frontier = children - {self.procs["qcluster"].pid}
        return found

    def workers(self) -> set[int]:
        """The worker processes: the sentinel's children (the sentinel is the main process's child)."""
        parents = _parents()
        sentinels = {pid for pid, parent in parents.items() if parent == self.procs["qcluster"].pid}
        return {pid for pid, parent in parents.items() if parent in sentinels}

    def output(self) -> str:
        return "\n".join(f"--- {path.name} ---\n{path.read_text()[-3000:]}" for path in sorted(self.logs.glob("*.log")))


def _parents() -> dict[int, int]:
    """Each live process's parent, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def wait_for(check: Callable[[], Any], *, seconds: float, what: str, explain: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds:.0f} s: {what}\n{explain()}")
