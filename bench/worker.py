"""One measurement in a fresh process: ``python -m bench.worker '<json spec>'``.

The spec names the target (``shardq-sqlite``, ``shardq-postgres`` or a peer), the scenario and
its parameters; the result is printed as the last line of stdout (see ``common.emit``).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from typing import Any

from bench.common import emit

TARGETS = {
    "shardq-sqlite": "bench.shardq_target",
    "shardq-postgres": "bench.shardq_target",
    "procrastinate": "bench.peers.procrastinate_peer",
    "pgqueuer": "bench.peers.pgqueuer_peer",
    "arq": "bench.peers.arq_peer",
    "rq": "bench.peers.rq_peer",
}


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    module = importlib.import_module(TARGETS[spec["target"]])
    result = asyncio.run(module.measure(spec["target"], spec["scenario"], spec["params"]))
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
