"""Bounds on evaluating staff's rules against client data (issue 15): `data.email =~ "(a+)+$"` on 29 characters
took 21 s, `$range(0, 3000000)` 16 s and a comprehension over two million items 37 s, inside the ingest request.

- Regular expressions run on RE2 (google-re2): linear time, whatever the pattern and the input. A pattern RE2
  cannot run (backreferences, lookaround) is refused when the rule is saved.
- `$range` makes at most RANGE_MAX items.
- Each event's whole evaluation has a time budget (RULES_EVAL_BUDGET_MS, default 250 ms). Past it, the thread
  evaluating is interrupted at its next Python instruction (CPython's PyThreadState_SetAsyncExc, from one
  watchdog thread shared by the process) and the event is recorded with a rule error; nothing stalls. Neither
  RE2 nor the capped `$range` holds the interpreter for long inside C, so the interruption lands promptly.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import re2
from rule_engine import errors
from rule_engine.ast import FuzzyComparisonExpression

RANGE_MAX = 10_000


class OverBudget(BaseException):
    """Raised asynchronously into a thread whose evaluation ran past its budget. A BaseException, like
    KeyboardInterrupt: no `except Exception` on the way (rule-engine's or ours) may swallow it."""


def _compile_re2(self: Any, regex: str) -> Any:
    try:
        return re2.compile(regex)
    except re2.error as error:
        raise errors.RegexSyntaxError(
            "invalid regular expression (RE2 syntax: no backreferences or lookaround)", error=error, value=regex
        ) from None


def use_re2() -> None:
    """rule-engine 5.1 (pinned) compiles `=~` patterns with `re`; RE2 instead."""
    FuzzyComparisonExpression._compile_regex = _compile_re2


def bounded_range(start: Any, stop: Any = None, step: Any = None) -> list[int]:
    numbers = range(int(start)) if stop is None else range(int(start), int(stop), int(step or 1))
    if len(numbers) > RANGE_MAX:
        raise ValueError(f"$range makes at most {RANGE_MAX} numbers; this one would make {len(numbers)}")
    return list(numbers)


class _Watchdog:
    """One daemon thread that interrupts evaluations past their deadline."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.deadlines: list[tuple[float, int, int]] = []  # (deadline, ticket, thread ident)
        self.live: set[int] = set()
        self.tickets = itertools.count()
        self.thread: threading.Thread | None = None

    def add(self, seconds: float) -> int:
        ticket = next(self.tickets)
        with self.lock:
            heapq.heappush(self.deadlines, (time.monotonic() + seconds, ticket, threading.get_ident()))
            self.live.add(ticket)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="rules-watchdog", daemon=True)
                self.thread.start()
            self.lock.notify()
        return ticket

    def done(self, ticket: int) -> bool:
        """True when the deadline was missed: an OverBudget is (or was) on its way to this thread."""
        with self.lock:
            if ticket in self.live:
                self.live.discard(ticket)
                return False
        # Fired: clear it if it has not been raised yet, so it cannot land in the caller's code.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
        return True

    def _run(self) -> None:
        while True:
            with self.lock:
                while self.deadlines and self.deadlines[0][1] not in self.live:
                    heapq.heappop(self.deadlines)  # finished in time
                wait = self.deadlines[0][0] - time.monotonic() if self.deadlines else None
                if wait is None or wait > 0:
                    self.lock.wait(wait)
                    continue
                _, ticket, ident = heapq.heappop(self.deadlines)
                self.live.discard(ticket)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(OverBudget))


_watchdog = _Watchdog()


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Raise OverBudget in this thread if the block runs longer than `seconds`."""
    ticket = _watchdog.add(seconds)
    missed = False
    try:
        yield
    finally:
        missed = _watchdog.done(ticket)
    if missed:
        raise OverBudget
