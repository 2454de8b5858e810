-- A start and a finish each rewrite the job's row. When no index covers a column the update
-- changes (state, owner, attempts, run_at, finished_at, history), PostgreSQL keeps the new
-- version on the same page and writes no index entry (a HOT update); any index on one of
-- them, even a partial index whose predicate names it, costs an insert into every index on
-- each start and finish. So the indexes that find queued and running jobs move to a narrow
-- table with one row per unfinished job (queued or processing): it is written when a job is
-- submitted, when it is retried (run_at) and when it finishes (deleted), never at a start.
CREATE TABLE job_queue (
    id       BIGINT  PRIMARY KEY,
    priority INTEGER NOT NULL,
    run_at   BIGINT  NOT NULL,
    key      TEXT,
    shard    INTEGER NOT NULL
);
INSERT INTO job_queue (id, priority, run_at, key, shard)
    SELECT id, priority, run_at, key, shard FROM jobs WHERE state IN ('queued', 'processing');
CREATE INDEX job_queue_ready ON job_queue (priority, id) WHERE key IS NULL;
CREATE INDEX job_queue_delayed ON job_queue (run_at) WHERE key IS NULL;
CREATE INDEX job_queue_keyed ON job_queue (key, id) WHERE key IS NOT NULL;
CREATE INDEX job_queue_shard ON job_queue (shard);

DROP INDEX jobs_ready, jobs_delayed, jobs_keyed, jobs_processing, jobs_finished;
-- Pruning finds finished jobs through their creation time (never updated, so HOT-safe): a
-- job that finished before a time was created before it.
CREATE INDEX jobs_created ON jobs (created_at);
-- Room on each page for the versions a job's start and finish write (HOT needs it there).
ALTER TABLE jobs SET (fillfactor = 50);
