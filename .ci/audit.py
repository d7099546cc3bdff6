"""pip-audit over the installed environment (every pinned runtime and dev package), part of `make test`.

Fails on any known vulnerability. Where no vulnerability database answers (no route to OSV, or a package index
that does not serve PyPI's JSON API, as behind a registry mirror), it says so and passes: an audit that could not
look is reported as not done, never as clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIP_AUDIT = Path(sys.executable).with_name("pip-audit")
SERVICES = ("osv", "pypi")  # OSV first: it needs one query per package, PyPI's JSON API one request each too.


def audit(service: str) -> tuple[dict[str, object] | None, str]:
    """The report, or None and why there is none."""
    try:
        done = subprocess.run(  # noqa: S603 (our own venv's pip-audit, fixed arguments)
            [str(PIP_AUDIT), "--vulnerability-service", service, "--format", "json", "--progress-spinner", "off"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return None, f"{service}: no answer within 300 s"
    try:
        report: dict[str, object] = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{service}: {last[:200]}"
    return report, ""


def verdict(service: str, report: dict[str, object]) -> tuple[int | None, list[str]]:
    """Exit code and lines for one service's report; None when it could look up no package at all."""
    dependencies = report.get("dependencies")
    if not isinstance(dependencies, list):
        return None, [f"{service}: a report without dependencies"]
    audited = [dep for dep in dependencies if "skip_reason" not in dep]
    if not audited:
        return None, [f"{service}: none of {len(dependencies)} packages could be looked up"]
    vulnerable = [dep for dep in audited if dep.get("vulns")]
    lines = [
        f"pip-audit: {dep['name']} {dep['version']}: {', '.join(v['id'] for v in dep['vulns'])}" for dep in vulnerable
    ]
    lines.append(
        f"pip-audit ({service}): {len(audited)} packages audited, {len(vulnerable)} with known vulnerabilities"
    )
    return (1 if vulnerable else 0), lines


def main() -> int:
    reasons = []
    for service in SERVICES:
        report, reason = audit(service)
        code, lines = (None, [reason]) if report is None else verdict(service, report)
        if code is None:
            reasons.extend(lines)
            continue
        print("\n".join(lines))
        return code
    print("pip-audit: SKIPPED, no vulnerability database reachable from here — " + "; ".join(reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
