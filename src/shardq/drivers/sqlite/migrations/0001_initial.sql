-- Jobs: one row per job, its whole life. History is a JSON array of [status, ms, error].
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    type             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    key              TEXT,
    shard            INTEGER NOT NULL,
    dedupe_key       TEXT    UNIQUE,
    max_attempts     INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    timeout          REAL,
    duration         TEXT    NOT NULL,
    batch_id         TEXT,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    owner            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result           TEXT,
    error            TEXT,
    context          TEXT,
    history          TEXT    NOT NULL
);
CREATE INDEX jobs_ready ON jobs (priority, id) WHERE state = 'queued' AND key IS NULL;
CREATE INDEX jobs_delayed ON jobs (run_at) WHERE state = 'queued' AND key IS NULL;
CREATE INDEX jobs_keyed ON jobs (key, id) WHERE state = 'queued' AND key IS NOT NULL;
CREATE INDEX jobs_processing ON jobs (shard) WHERE state = 'processing';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_type ON jobs (type, id);

-- Dead letters: jobs that failed for good, until replayed or pruned.
CREATE TABLE job_dlq (
    id            INTEGER PRIMARY KEY,
    job_id        INTEGER NOT NULL,
    type          TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    priority      INTEGER NOT NULL,
    key           TEXT,
    reason        TEXT    NOT NULL,
    error         TEXT,
    attempts      INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    failed_at     INTEGER NOT NULL,
    replayed_at   INTEGER,
    replay_job_id INTEGER
);
CREATE INDEX job_dlq_failed ON job_dlq (failed_at);
