"""Entities: the addressable owners of mailboxes. A job is a message to an entity.

Jobs that share a ``key`` are messages to the entity named by that key, so they run one at a
time in submit order. A job without a key is a message to an entity of its own, named by its
id. The entity id decides the shard, and so the runner, that delivers the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sharding import shard_for

#: The entity type of jobs, and the span attributes the seed gives every job span.
JOB_ENTITY_TYPE = "Job"
SPAN_ATTRIBUTES: dict[str, str] = {"entity.service": "job-processing", "entity.version": "v1"}


@dataclass(frozen=True, slots=True)
class EntityAddress:
    """Where a message goes: entity type, entity id and the shard that id hashes to."""

    entity_type: str
    entity_id: str
    shard: int


def job_entity(job_id: int, key: str | None, shards: int) -> EntityAddress:
    """The entity that receives the job ``job_id`` submitted with ``key``."""
    entity_id = f"key:{key}" if key is not None else f"job:{job_id}"
    return EntityAddress(JOB_ENTITY_TYPE, entity_id, shard_for(entity_id, shards))
