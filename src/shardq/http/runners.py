"""The body of ``GET /api/runners`` and of the dashboard's ``runners`` events: the cluster
view (``JobService.cluster``), with the runner of this process marked and its handlers."""

from __future__ import annotations

from typing import Any

from ..jobs import JobService


async def cluster_json(jobs: JobService) -> dict[str, Any]:
    """The whole cluster as the API shows it (see ``shardq.schema.Runners``)."""
    data = (await jobs.cluster()).to_dict()
    this = data["this_runner"]
    for r in data["runners"]:
        r["this_process"] = r["id"] == this
        r["handlers"] = sorted(jobs.handlers) if r["id"] == this else None
    return data
