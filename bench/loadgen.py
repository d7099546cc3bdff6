"""Load generators: wrk for single events when installed, else (and for batches) Python clients.

Both are closed loops: each client sends its next request as soon as the previous answer is
in. The Python clients run in separate processes, not threads, so the GIL of the generator
does not cap the rate it can drive on a 2-core machine.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing
import re
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.rows import sample_event

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
# Time for the client processes to fork and connect before the clock starts.
_START_DELAY_S = 0.5


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    token: str | None  # None: no Authorization header (the bare view)


@dataclass(frozen=True)
class LoadResult:
    generator: str  # "wrk" or "python"
    clients: int
    requests: int
    events: int
    errors: int  # answers other than 202, socket errors and timeouts
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class Client(Protocol):
    def send(self, n: int) -> tuple[int, bool]:
        """Do the n-th unit of work; return (events carried, whether it was accepted)."""

    def close(self) -> None: ...


class Plan(Protocol):
    """What each client process does; must pickle, as it is sent to the client processes."""

    def connect(self, client_no: int) -> Client: ...


@dataclass(frozen=True)
class HttpPlan:
    endpoint: Endpoint
    tag: str  # makes record ids unique across phases
    batch_size: int | None = None  # None: one event object per request, else a list of that many

    def connect(self, client_no: int) -> Client:
        return _HttpClient(self, client_no)


class _HttpClient:
    def __init__(self, plan: HttpPlan, client_no: int) -> None:
        self.plan = plan
        self.prefix = f"{plan.tag}-{client_no}"
        self.conn = http.client.HTTPConnection(plan.endpoint.host, plan.endpoint.port, timeout=60)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if plan.endpoint.token:
            self.headers["Authorization"] = f"Token {plan.endpoint.token}"

    def send(self, n: int) -> tuple[int, bool]:
        size = self.plan.batch_size
        if size is None:
            body = json.dumps(sample_event(f"{self.prefix}-{n}"))
        else:
            body = json.dumps([sample_event(f"{self.prefix}-{n}-{i}") for i in range(size)])
        try:
            # http.client reopens the connection by itself after a "Connection: close" answer.
            self.conn.request("POST", self.plan.endpoint.path, body=body.encode(), headers=self.headers)
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            return 0, False
        return (size or 1), response.status == 202

    def close(self) -> None:
        self.conn.close()


@dataclass
class _ClientStats:
    latencies: list[float] = field(default_factory=list)
    events: int = 0
    errors: int = 0
    last_done: float = 0.0


def _client_main(plan: Plan, client_no: int, start_at: float, end_at: float) -> _ClientStats:
    stats = _ClientStats()
    client = plan.connect(client_no)
    try:
        time.sleep(max(0.0, start_at - time.monotonic()))
        n = 0
        # Requests started before end_at all count, and the clock runs until the last one ends,
        # so a slow final request (a whole batch) is neither lost nor half-counted.
        while (started := time.monotonic()) < end_at:
            events, accepted = client.send(n)
            stats.last_done = time.monotonic()
            stats.latencies.append(stats.last_done - started)
            stats.events += events if accepted else 0
            stats.errors += 0 if accepted else 1
            n += 1
    finally:
        client.close()
    return stats


def run_closed_loop(plan: Plan, clients: int, seconds: float) -> LoadResult:
    """Run `clients` processes doing plan's work back to back for `seconds`."""
    context = multiprocessing.get_context("fork")  # the plan and this module are already imported
    start_at = time.monotonic() + _START_DELAY_S
    end_at = start_at + seconds
    with ProcessPoolExecutor(max_workers=clients, mp_context=context) as pool:
        futures = [pool.submit(_client_main, plan, i, start_at, end_at) for i in range(clients)]
        stats = [f.result() for f in futures]
    latencies = sorted(x for s in stats for x in s.latencies)
    return LoadResult(
        generator="python",
        clients=clients,
        requests=len(latencies),
        events=sum(s.events for s in stats),
        errors=sum(s.errors for s in stats),
        seconds=max(s.last_done for s in stats) - start_at,
        p50_ms=_percentile(latencies, 50) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
    )


def _percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    # wrk prints its version with the usage text ("wrk 4.1.0 [epoll] Copyright ...") and exits 1.
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr or "wrk").splitlines()[0]
    return first.split(" [")[0].strip()


def run_wrk(wrk: str, endpoint: Endpoint, clients: int, seconds: int, tag: str) -> LoadResult:
    """POST single events with wrk: one thread is plenty and leaves the cores to the server."""
    url = f"http://{endpoint.host}:{endpoint.port}{endpoint.path}"
    command = [wrk, "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s", "-s", str(WRK_SCRIPT), url]
    command += ["--", tag, endpoint.path, endpoint.token or ""]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    found = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(found.group(1))
    ok = raw["requests"] - raw["not_202"]
    return LoadResult(
        generator="wrk",
        clients=clients,
        requests=raw["requests"],
        events=ok,
        errors=raw["not_202"] + raw["socket_errors"] + raw["timeouts"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )


def run_single(endpoint: Endpoint, clients: int, seconds: int, tag: str, use_wrk: bool) -> LoadResult:
    """Single-event load with the same generator for whichever server is listening."""
    wrk = wrk_path() if use_wrk else None
    if wrk is not None:
        return run_wrk(wrk, endpoint, clients, seconds, tag)
    return run_closed_loop(HttpPlan(endpoint, tag), clients, seconds)
