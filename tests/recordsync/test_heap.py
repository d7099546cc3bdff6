"""The web process freezes what it starts with (recordsync.heap): a full garbage collection then walks only what
requests allocate, not the whole of Django, which paused one request in a few dozen by 60-120 ms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, sys
import recordsync.wsgi
print(json.dumps({"frozen": gc.get_freeze_count(), "views": "sync.api.views" in sys.modules}))
"""


def test_the_wsgi_application_freezes_django_and_the_views_the_url_conf_imports() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    found = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**env, "DEBUG": "1"}, capture_output=True, text=True, check=True
    )
    answer = json.loads(found.stdout.strip().splitlines()[-1])

    assert answer["views"] is True  # loaded before the freeze, not by the first request
    assert answer["frozen"] > 50_000, answer
