"""Compare shardq versions on one scenario, interleaved so machine noise hits both alike.

``python -m bench.ab --scenario throughput --rounds 5 HEAD~1 HEAD WORKTREE`` exports each
revision's ``src`` (``WORKTREE``: the files as they are now) and runs the scenario with each in
turn, ``rounds`` times, printing the median of every figure per revision.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import run

ROOT = run.ROOT


def export(rev: str, into: Path) -> Path:
    """A directory whose ``src`` holds shardq at ``rev``."""
    dest = into / rev.replace("/", "_").replace("~", "-")
    if rev == "WORKTREE":
        shutil.copytree(ROOT / "src", dest / "src")
        return dest / "src"
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab")
    ap.add_argument("revs", nargs="+")
    ap.add_argument("--scenario", default="throughput")
    ap.add_argument("--target", default="shardq-sqlite")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int)
    args = ap.parse_args()
    params = dict(run.FULL[args.scenario])
    if args.jobs and "n" in params and "timeout" in params:
        params["n"] = args.jobs
    tmp = Path(tempfile.mkdtemp(prefix="shardq-ab-"))
    results: dict[str, list[dict[str, Any]]] = {r: [] for r in args.revs}
    try:
        paths = {r: export(r, tmp) for r in args.revs}
        for i in range(args.rounds):
            for rev in args.revs:
                os.environ["PYTHONPATH"] = f"{paths[rev]}{os.pathsep}{ROOT}"
                r = run.run_one(run.sys.executable, args.target, args.scenario, params)
                run.log(f"round {i + 1} {rev}: {run._brief(r)}")
                results[rev].append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for rev, runs in results.items():
        med = run.median_of(runs)
        keys = [k for k, v in med.items() if isinstance(v, float)]
        print(rev, " ".join(f"{k}={med[k]:.4g}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
