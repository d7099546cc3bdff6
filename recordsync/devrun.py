"""`make run`: the web server, the worker cluster and the dispatcher in the foreground; Ctrl-C stops all three.

Each child gets its own process group, so a Ctrl-C reaches only this supervisor, which then
sends one SIGTERM to each child and waits for a clean stop. runserver's auto-reloader runs the
server in a child process, so it gets the signal as a group; sync_cluster must get it alone, since
it stops its own workers in order (each finishes its task). A second Ctrl-C
kills everything at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

STOP_WAIT_SECONDS = 20


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "manage.py", *args], start_new_session=True)  # noqa: S603


def _stop(children: list[subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    web, *others = children
    if web.poll() is None:
        os.killpg(web.pid, sig)
    for child in others:
        if child.poll() is None:
            (os.killpg if sig == signal.SIGKILL else os.kill)(child.pid, sig)


def main() -> int:
    port = os.environ.get("PORT", "8000")
    children = [_start(["runserver", f"0.0.0.0:{port}"]), _start(["sync_cluster"]), _start(["sync_dispatch"])]
    stopping = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping["count"] += 1
        _stop(children, signal.SIGTERM if stopping["count"] == 1 else signal.SIGKILL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping["count"] and all(child.poll() is None for child in children):
        time.sleep(0.2)
    if not stopping["count"]:  # one child died on its own: take the other down too
        _stop(children, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while any(child.poll() is None for child in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    _stop(children, signal.SIGKILL)
    print("stopped web, worker and dispatcher", file=sys.stderr)
    return 0 if stopping["count"] else 1


if __name__ == "__main__":
    sys.exit(main())
