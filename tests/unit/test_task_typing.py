"""Typed tasks under ``mypy --strict``: an application's uses type-check with every type
exact (no ``Any`` leaks in), and each wrong use is an error of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "typing"
ROOT = HERE.parents[1]


def _mypy(path: Path) -> tuple[int, str]:
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(path)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode not in (0, 1):
        pytest.fail(f"mypy did not run: {run.stderr or run.stdout}")
    return run.returncode, run.stdout


def test_the_uses_of_typed_tasks_pass_strict_with_exact_types() -> None:
    code, out = _mypy(HERE / "check_tasks.py")
    assert code == 0, out


def test_every_wrong_use_is_an_error_and_nothing_else_is() -> None:
    path = HERE / "bad_tasks.py"
    lines = path.read_text().splitlines()
    marked = {n for n, line in enumerate(lines, 1) if line.rstrip().endswith("# error")}
    assert len(marked) >= 15
    _, out = _mypy(path)
    reported = {int(m) for m in re.findall(r"^\S*bad_tasks\.py:(\d+): error:", out, re.M)}
    assert not reported - marked, f"errors on unmarked lines:\n{out}"
    missing = sorted(marked - reported)
    assert not missing, "no error on: " + "; ".join(lines[n - 1].strip() for n in missing)
