"""The SQL of the SQLite engine's writes of outcomes: how a history entry is appended, the
fence of an attempt, and the statement that writes a step's outcomes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from ..base import Outcome

# History is a JSON array in text; an entry is appended as text (json_insert would parse and
# re-serialise the whole array on every start and finish).
APPENDED = "substr(history, 1, length(history) - 1) || ',' || json_array({}, {}, {}) || ']'"
APPEND = "history = " + APPENDED.format("?", "?", "?")
FENCE = "WHERE id = ? AND state = 'processing' AND owner = ? AND attempts = ?"
#: The outcomes that put a job off without using its attempt, and their history entries.
PUT_OFF = {"snooze": "snoozed", "throttle": "throttled"}
#: Complete many jobs at once from a JSON array of [id, attempt, result, at], fenced per job.
COMPLETE = (
    "UPDATE jobs SET state = 'complete', result = v.result, error = NULL,"
    " finished_at = v.at, updated_at = v.at, owner = NULL,"
    " history = "
    + APPENDED.format("'complete'", "v.at", "NULL")
    + " FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS attempt,"
    " json_extract(value, '$[2]') AS result, json_extract(value, '$[3]') AS at"
    " FROM json_each(?)) AS v"
    " WHERE jobs.id = v.id AND jobs.state = 'processing' AND jobs.owner = ?"
    " AND jobs.attempts = v.attempt RETURNING jobs.id"
)


def finish(c: sqlite3.Connection, outcomes: Sequence[Outcome], owner: str) -> list[int]:
    """Write ``outcomes`` (fenced per attempt) inside the caller's transaction; the ids written."""
    written: list[int] = []
    done = [[o.id, o.attempt, o.result, o.at] for o in outcomes if o.kind == "complete"]
    if done:
        # Every completion in one statement; RETURNING names the ones the fence let in.
        rows = c.execute(COMPLETE, (json.dumps(done), owner)).fetchall()
        written.extend(r[0] for r in rows)
    for o in outcomes:
        fence = (o.id, owner, o.attempt)
        if o.kind == "complete":
            continue
        if o.kind == "retry":
            cur = c.execute(
                "UPDATE jobs SET state = 'queued', run_at = ?, error = ?, updated_at = ?,"
                f" owner = NULL, {APPEND} {FENCE}",
                (o.run_at, o.error, o.at, "queued", o.at, o.error, *fence),
            )
        elif o.kind in PUT_OFF:
            # The attempt is given back: the job runs again under the same number.
            cur = c.execute(
                "UPDATE jobs SET state = 'queued', run_at = ?, updated_at = ?,"
                f" attempts = attempts - 1, owner = NULL, {APPEND} {FENCE}",
                (o.run_at, o.at, PUT_OFF[o.kind], o.at, o.error, *fence),
            )
        else:
            cur = c.execute(
                "UPDATE jobs SET state = ?, error = ?, finished_at = ?, updated_at = ?,"
                f" owner = NULL, {APPEND} {FENCE}",
                (o.kind, o.error, o.at, o.at, o.kind, o.at, o.error, *fence),
            )
        if cur.rowcount != 1:
            continue
        written.append(o.id)
        if o.kind == "failed":
            c.execute(
                "INSERT INTO job_dlq (id, job_id, type, payload, priority, key, reason,"
                " error, attempts, max_attempts, created_at, failed_at)"
                " SELECT ?, id, type, payload, priority, key, ?, error, attempts,"
                " max_attempts, created_at, ? FROM jobs WHERE id = ?",
                (o.dlq_id, o.reason, o.at, o.id),
            )
    return written
