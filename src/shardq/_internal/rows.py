"""A submitted job as the row storage inserts: checked, encoded, placed on its shard."""

from __future__ import annotations

import contextlib
from typing import Any

from ..config import Config
from ..drivers.base import NewJob
from ..entity import job_entity
from ..errors import JobError
from ..models import JobPayload
from .validation import check_name, check_options, encode_json, show


def encode_spec(
    spec: JobPayload,
    job_id: int,
    now: int,
    run_at: int,
    context: str | None,
    checked: dict[tuple[Any, ...], tuple[int, float | None]],
    config: Config,
) -> NewJob:
    """``spec``, checked, as the row to insert under ``job_id`` (raises Validation).
    ``checked`` remembers the option sets already validated in this call (a batch mostly
    repeats one)."""
    if not isinstance(spec, JobPayload):
        raise JobError.from_validation(None, f"a job must be a JobPayload, got {show(spec)}")
    ma, t = spec.max_attempts, spec.timeout
    # The types are part of the key: True == 1 == 1.0, but only the int is valid.
    options = (spec.type, spec.priority, spec.duration, ma, type(ma), t, type(t),
               spec.key, type(spec.key), spec.batch_id, type(spec.batch_id))  # fmt: skip
    try:
        valid = checked.get(options)
    except TypeError:  # something unhashable: no cache, validation says what is wrong
        valid = None
    if valid is None:
        valid = check_options(spec)
        with contextlib.suppress(TypeError):
            checked[options] = valid
    if spec.dedupe_key is not None:
        check_name("dedupe_key", spec.dedupe_key)
    encoded = encode_json("payload", spec.payload)
    size = len(encoded)  # ASCII (the encoder escapes the rest): characters are bytes
    if size > config.max_payload_bytes:
        raise JobError.from_validation(
            None,
            f"payload is {size} bytes, over the limit of {config.max_payload_bytes}"
            " (store large data elsewhere and submit a reference)",
        )
    return NewJob(
        id=job_id,
        type=spec.type,
        payload=encoded,
        priority=valid[0],
        key=spec.key,
        shard=job_entity(job_id, spec.key, config.shards).shard,
        dedupe_key=spec.dedupe_key,
        max_attempts=config.default_max_attempts if ma is None else ma,
        timeout=valid[1],
        duration=spec.duration,
        batch_id=spec.batch_id,
        run_at=run_at,
        created_at=now,
        context=context,
    )
