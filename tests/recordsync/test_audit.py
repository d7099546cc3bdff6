"""The pip-audit step of `make test` (.ci/audit.py, issue 15): a vulnerability fails it; an audit that could look
up nothing is reported as skipped, never as clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", Path(__file__).parents[2] / ".ci" / "audit.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_known_vulnerability_fails_the_step(audit: ModuleType) -> None:
    report = {
        "dependencies": [
            {"name": "django", "version": "5.2.0", "vulns": [{"id": "PYSEC-2025-1", "fix_versions": ["5.2.1"]}]},
            {"name": "six", "version": "1.17.0", "vulns": []},
        ]
    }
    code, lines = audit.verdict("osv", report)
    assert code == 1
    assert lines == [
        "pip-audit: django 5.2.0: PYSEC-2025-1",
        "pip-audit (osv): 2 packages audited, 1 with known vulnerabilities",
    ]


def test_a_clean_report_passes(audit: ModuleType) -> None:
    code, lines = audit.verdict("osv", {"dependencies": [{"name": "six", "version": "1.17.0", "vulns": []}]})
    assert code == 0 and lines[-1].endswith("1 packages audited, 0 with known vulnerabilities")


def test_a_service_that_could_look_up_nothing_is_not_a_clean_audit(audit: ModuleType) -> None:
    skipped = {"dependencies": [{"name": "six", "skip_reason": "Dependency not found on PyPI"}]}
    code, lines = audit.verdict("pypi", skipped)
    assert code is None and lines == ["pypi: none of 1 packages could be looked up"]
