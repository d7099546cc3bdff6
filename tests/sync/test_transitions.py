"""One module owns the job state machine: nothing else writes SyncJob.state (issue 16)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sync import transitions
from sync.models import JobState, SyncJob

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sync", "crms", "rules", "recordsync")
OWNER = ROOT / "sync" / "transitions.py"
# Calls that read by state rather than write it.
READS = {"filter", "exclude", "get", "Q", "count", "Outcome"}


def _modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts and path != OWNER:
                found.append(path)
    return found


def _names_job_state(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "JobState" for n in ast.walk(node))


def _state_writes(path: Path, root: Path = ROOT) -> list[str]:
    """`state=JobState.X` in a call, `{"state": JobState.X}`, `x.state = JobState.X`, or SQL setting 'pending'."""
    where = str(path.relative_to(root))
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            for keyword in node.keywords:
                if keyword.arg == "state" and _names_job_state(keyword.value) and name not in READS:
                    found.append(f"{where}:{node.lineno} {name}(state=...)")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "state" and _names_job_state(value):
                    found.append(f"{where}:{node.lineno} {{'state': ...}}")
        elif isinstance(node, ast.Assign) and _names_job_state(node.value):
            if any(isinstance(t, ast.Attribute) and t.attr == "state" for t in node.targets):
                found.append(f"{where}:{node.lineno} .state = ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.lower()
            if SyncJob._meta.db_table in text and ("'pending'" in text or "state =" in text):
                found.append(f"{where}:{node.lineno} SQL")
    return found


def test_no_module_but_transitions_writes_a_job_state() -> None:
    writes = [w for path in _modules() for w in _state_writes(path)]
    assert writes == [], "job states are written only through sync/transitions.py:\n" + "\n".join(writes)


def test_the_check_finds_each_kind_of_raw_state_write(tmp_path: Path) -> None:
    """The scan above can fail: a module that writes a state by hand is caught, whichever way it writes it."""
    module = tmp_path / "rogue.py"
    sql = f"UPDATE {SyncJob._meta.db_table} SET state = 'pending'"  # noqa: S608 - the text under test
    module.write_text(
        "def f(jobs, job):\n"
        "    jobs.filter(state=JobState.IN_FLIGHT).update(state=JobState.PENDING, lease_owner='')\n"
        "    back = {'state': JobState.PENDING}\n"
        "    job.state = JobState.FAILED\n"
        f"    sql = {sql!r}\n"
    )
    found = [w.split(" ", 1)[1] for w in _state_writes(module, tmp_path)]
    assert sorted(found) == sorted(["update(state=...)", "{'state': ...}", ".state = ...", "SQL"])


def test_a_job_that_was_not_sent_only_retries_or_fails() -> None:
    with pytest.raises(ValueError, match="retries or fails"):
        transitions.finish_unsent(
            SyncJob.objects.none(),
            state=JobState.SYNCED,
            attempts=1,
            next_attempt_at=None,
            error=("", "", None),
            finished=None,  # type: ignore[arg-type]
        )
