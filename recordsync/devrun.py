"""`make run`: the web server, the worker cluster and the dispatcher in the foreground; Ctrl-C stops all three.

A small supervisor, as compose and ECS are in production: a child that dies (a crash, the OOM killer,
kill -9) is started again within a second, its process group killed first so no orphan of it runs on;
a worker cluster or dispatcher that is alive but makes no progress (sync/delivery/liveness.py, the check
`manage.py sync_health` makes) three checks in a row is restarted too. A child that keeps dying as it
starts (five times in a row within seconds of starting: a broken setting, a port in use) stops the lot,
so the error stays on screen.

Each child gets its own process group, so a Ctrl-C reaches only this supervisor, which then sends one
SIGTERM to each child and waits for a clean stop. runserver's auto-reloader runs the server in a child
process, so it gets the signal as a group; sync_cluster must get it alone, since it stops its own
workers in order (each finishes its task). A second Ctrl-C kills everything at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

STOP_WAIT_SECONDS = 20
QUICK_DEATHS_ALLOWED = 5  # deaths in a row, each within QUICK_DEATH_SECONDS of starting; one more stops all
QUICK_DEATH_SECONDS = 10.0
HEALTH_EVERY_SECONDS = 15.0
HEALTH_GRACE_SECONDS = 45.0  # after a (re)start, before the first liveness check counts
HEALTH_FAILURES_ALLOWED = 2  # a third failed check in a row restarts the child


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "manage.py", *args], start_new_session=True)  # noqa: S603


def _stop(children: dict[str, subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    for name, child in children.items():
        if child.poll() is None:
            (os.killpg if name == "web" or sig == signal.SIGKILL else os.kill)(child.pid, sig)


def _reap(child: subprocess.Popen[bytes]) -> None:
    """A dead child's group: whatever it left behind (runserver's reloaded server, a cluster's workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


class Liveness:
    """The same verdict `manage.py sync_health` gives, asked in this process every HEALTH_EVERY_SECONDS."""

    clock: Callable[[], float] = time.monotonic

    def __init__(self) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recordsync.settings")
        import django  # configured here: this supervisor is started as a plain module, not by manage.py

        django.setup()
        self.started: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.checked = self.clock()

    def restarted(self, role: str) -> None:
        self.started[role], self.failures[role] = self.clock(), 0

    def stalled(self) -> list[str]:
        """The roles that failed their check HEALTH_FAILURES_ALLOWED + 1 times in a row."""
        from django.db import DatabaseError
        from django.utils import timezone

        from sync.delivery import liveness  # models: only once Django is set up

        now = self.clock()
        if now - self.checked < HEALTH_EVERY_SECONDS:
            return []
        self.checked = now
        stalled = []
        for role in ("worker", "dispatcher"):
            if now - self.started.get(role, 0.0) < HEALTH_GRACE_SECONDS:
                continue
            try:
                ok = liveness.health(role=role, host=liveness.host_name(), now=timezone.now()).ok
            except DatabaseError:
                continue  # a restart would not bring the database back
            self.failures[role] = 0 if ok else self.failures.get(role, 0) + 1
            if self.failures[role] > HEALTH_FAILURES_ALLOWED:
                stalled.append(role)
        return stalled


def main() -> int:
    port = os.environ.get("PORT", "8000")
    bind = os.environ.get("BIND", "127.0.0.1")  # BIND=0.0.0.0 to reach it from another machine
    roles = {"web": ["runserver", f"{bind}:{port}"], "worker": ["sync_cluster"], "dispatcher": ["sync_dispatch"]}
    children = {name: _start(args) for name, args in roles.items()}
    health = Liveness()
    for role in roles:
        health.restarted(role)
    quick_deaths = dict.fromkeys(roles, 0)
    crash_loop = False
    stopping = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping["count"] += 1
        _stop(children, signal.SIGTERM if stopping["count"] == 1 else signal.SIGKILL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping["count"]:
        for name, child in list(children.items()):
            if child.poll() is None or stopping["count"]:
                continue
            lived = time.monotonic() - health.started.get(name, 0.0)
            quick_deaths[name] = quick_deaths[name] + 1 if lived < QUICK_DEATH_SECONDS else 0
            if quick_deaths[name] > QUICK_DEATHS_ALLOWED:
                print(
                    f"{name} keeps exiting as it starts (code {child.returncode}): stopping everything", file=sys.stderr
                )
                crash_loop, stopping["count"] = True, 1
                _stop(children, signal.SIGTERM)
                break
            print(f"{name} exited (code {child.returncode}); starting it again", file=sys.stderr)
            _reap(child)
            children[name] = _start(roles[name])
            health.restarted(name)
        for name in [] if stopping["count"] else health.stalled():
            print(f"{name} makes no progress (sync_health); starting it again", file=sys.stderr)
            _reap(children[name])
            children[name].wait()
            children[name] = _start(roles[name])
            health.restarted(name)
        time.sleep(0.5)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while any(child.poll() is None for child in children.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    _stop(children, signal.SIGKILL)
    print("stopped web, worker and dispatcher", file=sys.stderr)
    return 1 if crash_loop else 0


if __name__ == "__main__":
    sys.exit(main())
