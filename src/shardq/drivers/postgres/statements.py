"""The SQL the PostgreSQL driver sends: every statement and the pieces they are built from.

Batches go as arrays (``unnest``), so a batch insert, a start batch and a finish batch are one
statement each; a step's outcomes and starts are one statement too (``ADVANCE``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from ..base import NewJob

#: The channel every process listens on: rescans, cancels, schedule and control changes,
#: and submits not announced on their shards' channels (``payloads``).
CHANNEL = "shardq_jobs"
#: The channel finished jobs are announced on, listened on by processes that wait for them.
DONE_CHANNEL = "shardq_done"

REF = "id, priority, run_at, key, shard, type"
# Queued jobs are found through job_queue (which also holds the processing ones).
QUEUED = (
    "SELECT q.id, q.priority, q.run_at, q.key, q.shard, j.type FROM job_queue q"
    " JOIN jobs j ON j.id = q.id WHERE j.state = 'queued'"
)
STARTED = (
    "id, type, payload, priority, key, shard, attempts, max_attempts, timeout, duration,"
    " run_at, created_at, context"
)
UNNEST_NEW = (
    "unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], $6::int[],"
    " $7::text[], $8::int[], $9::float8[], $10::text[], $11::text[], $12::bigint[],"
    " $13::bigint[], $14::text[]) WITH ORDINALITY AS t(id, type, payload, priority, key,"
    " shard, dedupe_key, max_attempts, timeout, duration, batch_id, run_at, created_at,"
    " context, ord)"
)
INSERT = (
    "INSERT INTO jobs (id, type, payload, priority, state, key, shard, dedupe_key,"
    " max_attempts, timeout, duration, batch_id, run_at, created_at, updated_at, context,"
    " history) SELECT id, type, payload, priority, 'queued', key, shard, dedupe_key,"
    " max_attempts, timeout, duration, batch_id, run_at, created_at, created_at, context,"
    f" '[' || json_build_array('queued', created_at, NULL)::text || ']' FROM {UNNEST_NEW}"
    " ORDER BY ord"
)
# Notifications given as two arrays, channels and payloads (``payloads.Notes``).
NOTES = "SELECT pg_notify(n.c, n.p) FROM unnest(${}::text[], ${}::text[]) AS n(c, p)"
# Every inserted job also gets its row in job_queue (migration 3 says why).
ENQUEUE = "q AS (INSERT INTO job_queue SELECT id, priority, run_at, key, shard FROM ins)"
# A plain batch and its notifications in one statement, so one round trip and one commit.
INSERT_PLAIN = (
    f"WITH ins AS ({INSERT} RETURNING id, priority, run_at, key, shard), {ENQUEUE}"
    f" {NOTES.format(15, 16)}"
)
INSERT_DEDUPE = (
    f"WITH ins AS ({INSERT} ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"
    f" RETURNING id, priority, run_at, key, shard), {ENQUEUE} SELECT id FROM ins"
)
# A plain batch whose jobs differ only in id, payload, key and shard (what one submit call
# of a list makes): the shared options go as single values. Fourteen arrays of a thousand
# values cost the client more to encode, and the server more to unnest, than the statement
# itself costs to run.
INSERT_UNIFORM = (
    "WITH ins AS (INSERT INTO jobs (id, type, payload, priority, state, key, shard,"
    " max_attempts, timeout, duration, batch_id, run_at, created_at, updated_at, context,"
    " history) SELECT id, $5::text, payload, $6::int, 'queued', key, shard, $7::int,"
    " $8::float8, $9::text, $10::text, $11::bigint, $12::bigint, $12::bigint, $13::text,"
    " $14::text FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[])"
    " WITH ORDINALITY AS t(id, payload, key, shard, ord) ORDER BY ord"
    " RETURNING id, priority, run_at, key, shard),"
    f" {ENQUEUE} {NOTES.format(15, 16)}"
)
SHARED = operator.attrgetter(
    "type",
    "priority",
    "max_attempts",
    "timeout",
    "duration",
    "batch_id",
    "run_at",
    "created_at",
    "context",
)
NOTIFY = NOTES.format(1, 2)


def appended(history: str, status: str, at: str, error: str) -> str:
    """The SQL of ``history`` (a JSON array kept as text) with ``[status, at, error]`` (SQL
    expressions) appended: a string append, no parsing (migration 4 says why)."""
    return f"left({history}, -1) || ',' || json_build_array({status}, {at}, {error})::text || ']'"


def append(status: str, at: str, error: str) -> str:
    """The SQL that appends ``[status, at, error]`` (SQL expressions) to ``history``."""
    return f"history = {appended('history', status, at, error)}"


def announced(finished: str) -> str:
    """CTEs announcing the ids of ``finished`` (``upd``, maybe filtered) as finished, in
    notifications of 300 ids each (``note``, one row per notification)."""
    return (
        f"fin AS (SELECT id, (row_number() OVER ()) / 300 AS grp FROM {finished}),"
        f" note AS (SELECT pg_notify('{DONE_CHANNEL}', 'f' || json_agg(id)::text) FROM fin"
        " GROUP BY grp)"
    )


# An outcome's entry: a retry shows as queued again, and only a failure carries its error.
HISTORY_OUTCOME = appended(
    "j.history",
    "CASE o.kind WHEN 'retry' THEN 'queued' WHEN 'snooze' THEN 'snoozed'"
    " WHEN 'throttle' THEN 'throttled' ELSE o.kind END",
    "o.at",
    "CASE o.kind WHEN 'complete' THEN NULL ELSE o.error END",
)
HISTORY_COMPLETE = appended("j.history", "'complete'", "o.at", "NULL::text")
HISTORY_CANCELLED = appended("history", "'cancelled'", "$2::bigint", "NULL")
APPEND_PROCESSING = append("'processing'", "$3::bigint", "NULL::text")
# A start need not wait for its WAL flush: if the server crashes before the flush, the job
# is simply queued again (at-least-once), and the attempt's outcome write, being fenced on
# the attempt, cannot land. So the start commits asynchronously (set_config is local to
# this statement's transaction).
START = (
    "WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true) AS v)"
    " UPDATE jobs j SET state = 'processing', attempts = j.attempts + 1, owner = $2,"
    f" updated_at = $3, {APPEND_PROCESSING}"
    " WHERE j.state = 'queued' AND j.id = ANY($1::bigint[])"
    " AND NOT EXISTS (SELECT 1 FROM shardq_shards s WHERE s.shard = j.shard"
    " AND s.owner IS DISTINCT FROM $2) AND (SELECT v FROM async_commit) = 'off'"
    f" RETURNING {STARTED}"
)
# Every outcome of a batch in one statement: each row is written only while the attempt
# still owns it (owner and attempt match; only a processing job has an owner, every move
# out of processing clears it), failed ones also get a dead letter, and finished ones are
# announced in chunks of ids. The fence names no state on purpose: the planner would then
# scan the processing index and join the outcomes to it in a nested loop (quadratic in
# the batch, most of a step's time); by id it looks each job up once. A finished
# job leaves job_queue; a retried, snoozed or throttled one moves there to its new run_at
# (a snooze or a throttle gives its attempt back: the job runs again under the same attempt
# number).
_PUT_OFF = "('snooze', 'throttle')"
_AGAIN = "('retry', 'snooze', 'throttle')"
FINISH_CTES = f"""
o AS (
    SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[], $5::bigint[], $6::text[],
                         $7::text[], $8::text[], $9::bigint[], $10::bigint[])
        AS o(id, attempt, kind, at, result, error, reason, run_at, dlq_id)
), upd AS (
    UPDATE jobs j SET
        state = CASE WHEN o.kind IN {_AGAIN} THEN 'queued' ELSE o.kind END,
        result = CASE o.kind WHEN 'complete' THEN o.result ELSE j.result END,
        error = CASE WHEN o.kind = 'complete' THEN NULL WHEN o.kind IN {_PUT_OFF} THEN j.error
                ELSE o.error END,
        run_at = CASE WHEN o.kind IN {_AGAIN} THEN o.run_at ELSE j.run_at END,
        finished_at = CASE WHEN o.kind IN {_AGAIN} THEN j.finished_at ELSE o.at END,
        attempts = CASE WHEN o.kind IN {_PUT_OFF} THEN j.attempts - 1 ELSE j.attempts END,
        updated_at = o.at,
        owner = NULL,
        history = {HISTORY_OUTCOME}
    FROM o
    WHERE j.id = o.id AND j.owner = $1 AND j.attempts = o.attempt
    RETURNING j.id, o.kind, o.reason, o.at, o.dlq_id, o.error, j.type, j.payload, j.priority,
              j.key, j.attempts, j.max_attempts, j.created_at, o.run_at
), done AS (
    DELETE FROM job_queue q USING upd
    WHERE q.id = upd.id AND upd.kind NOT IN {_AGAIN}
), again AS (
    UPDATE job_queue q SET run_at = upd.run_at FROM upd
    WHERE q.id = upd.id AND upd.kind IN {_AGAIN}
), dlq AS (
    INSERT INTO job_dlq (id, job_id, type, payload, priority, key, reason, error, attempts,
                         max_attempts, created_at, failed_at)
    SELECT dlq_id, id, type, payload, priority, key, reason, error, attempts, max_attempts,
           created_at, at
    FROM upd WHERE kind = 'failed'
), {announced(f"upd WHERE kind NOT IN {_AGAIN}")}"""
# The same for a batch of completions only (what a healthy runner writes nearly always):
# four arrays instead of nine, no per-row CASE, no retry, no dead letter. The nine arrays
# cost the client more to encode, and the server more to unnest, than these rows cost to
# write.
COMPLETE_CTES = f"""
o AS (
    SELECT * FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::text[])
        AS o(id, attempt, at, result)
), upd AS (
    UPDATE jobs j SET state = 'complete', result = o.result, error = NULL,
        finished_at = o.at, updated_at = o.at, owner = NULL, history = {HISTORY_COMPLETE}
    FROM o
    WHERE j.id = o.id AND j.owner = $1 AND j.attempts = o.attempt
    RETURNING j.id
), done AS (
    DELETE FROM job_queue q USING upd WHERE q.id = upd.id
), {announced("upd")}"""


def finish(ctes: str) -> str:
    """The statement writing the outcomes of ``ctes``: the ids written, then a NULL per
    notification."""
    return f"WITH {ctes} SELECT id FROM upd UNION ALL SELECT NULL FROM note"


def advance(ctes: str, starts: int) -> str:
    """Outcomes and starts of one runner step in one statement: one round trip, one commit
    (a synchronous one: the outcomes must be durable). The outcomes are those of ``ctes``
    (over ``$1``, the owner, and the parameters before ``$starts``); ``$starts`` holds the
    ids to start and the next parameter the time. Both updates see the same snapshot and
    touch different rows (processing ones, queued ones). Started rows come first, flagged."""
    now = f"${starts + 1}::bigint"
    return f"""
WITH {ctes}, st AS (
    UPDATE jobs j SET state = 'processing', attempts = j.attempts + 1, owner = $1,
        updated_at = {now}, {append("'processing'", now, "NULL::text")}
    WHERE j.state = 'queued' AND j.id = ANY(${starts}::bigint[])
      AND NOT EXISTS (SELECT 1 FROM shardq_shards s WHERE s.shard = j.shard
                      AND s.owner IS DISTINCT FROM $1)
    RETURNING {STARTED}
)
SELECT true AS started, {STARTED} FROM st
UNION ALL SELECT false, id, {", ".join(["NULL"] * 12)} FROM upd
UNION ALL SELECT NULL, {", ".join(["NULL"] * 13)} FROM note
"""


FINISH = finish(FINISH_CTES)
ADVANCE = advance(FINISH_CTES, 11)
FINISH_COMPLETE = finish(COMPLETE_CTES)
ADVANCE_COMPLETE = advance(COMPLETE_CTES, 6)


def new_job_arrays(jobs: Sequence[NewJob]) -> list[list[Any]]:
    """The arguments of ``INSERT_PLAIN`` and ``INSERT_DEDUPE`` for ``jobs``: one array per column."""
    return [
        [j.id for j in jobs],
        [j.type for j in jobs],
        [j.payload for j in jobs],
        [j.priority for j in jobs],
        [j.key for j in jobs],
        [j.shard for j in jobs],
        [j.dedupe_key for j in jobs],
        [j.max_attempts for j in jobs],
        [j.timeout for j in jobs],
        [j.duration for j in jobs],
        [j.batch_id for j in jobs],
        [j.run_at for j in jobs],
        [j.created_at for j in jobs],
        [j.context for j in jobs],
    ]
