"""``import shardq`` stays light: no web framework, ORM, optional driver or HTTP stack."""

from __future__ import annotations

import json
import subprocess
import sys

#: Top-level packages that only optional parts of shardq (or the application) may import.
FRAMEWORKS = frozenset(
    {"django", "fastapi", "starlette", "uvicorn", "pydantic", "sqlalchemy", "psycopg", "httpx"}
)


def test_import_shardq_imports_no_framework() -> None:
    code = (
        "import json, sys, shardq, shardq.tasks; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(run.stdout))
    assert "shardq" in loaded
    assert not loaded & FRAMEWORKS, f"import shardq loaded {sorted(loaded & FRAMEWORKS)}"
