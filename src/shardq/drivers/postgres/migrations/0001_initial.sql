-- Jobs: one row per job, its whole life. History is a JSON array of [status, ms, error].
CREATE TABLE jobs (
    id               BIGINT           PRIMARY KEY,
    type             TEXT             NOT NULL,
    payload          TEXT             NOT NULL,
    priority         INTEGER          NOT NULL,
    state            TEXT             NOT NULL,
    key              TEXT,
    shard            INTEGER          NOT NULL,
    dedupe_key       TEXT             UNIQUE,
    max_attempts     INTEGER          NOT NULL,
    attempts         INTEGER          NOT NULL DEFAULT 0,
    timeout          DOUBLE PRECISION,
    duration         TEXT             NOT NULL,
    batch_id         TEXT,
    run_at           BIGINT           NOT NULL,
    created_at       BIGINT           NOT NULL,
    updated_at       BIGINT           NOT NULL,
    finished_at      BIGINT,
    owner            TEXT,
    cancel_requested BOOLEAN          NOT NULL DEFAULT FALSE,
    result           TEXT,
    error            TEXT,
    context          TEXT,
    history          JSONB            NOT NULL
);
CREATE INDEX jobs_ready ON jobs (priority, id) WHERE state = 'queued' AND key IS NULL;
CREATE INDEX jobs_delayed ON jobs (run_at) WHERE state = 'queued' AND key IS NULL;
CREATE INDEX jobs_keyed ON jobs (key, id) WHERE state = 'queued' AND key IS NOT NULL;
CREATE INDEX jobs_processing ON jobs (shard) WHERE state = 'processing';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_type ON jobs (type, id);

-- Dead letters: jobs that failed for good, until replayed or pruned.
CREATE TABLE job_dlq (
    id            BIGINT  PRIMARY KEY,
    job_id        BIGINT  NOT NULL,
    type          TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    priority      INTEGER NOT NULL,
    key           TEXT,
    reason        TEXT    NOT NULL,
    error         TEXT,
    attempts      INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    created_at    BIGINT  NOT NULL,
    failed_at     BIGINT  NOT NULL,
    replayed_at   BIGINT,
    replay_job_id BIGINT
);
CREATE INDEX job_dlq_failed ON job_dlq (failed_at);

-- Runners of the cluster. A runner is live while its session holds its runner lock
-- (lock_key); the heartbeat only tells how recently it was seen.
CREATE TABLE shardq_runners (
    id           TEXT    PRIMARY KEY,
    lock_key     INTEGER NOT NULL,
    app          TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL
);

-- The runner serving each shard (NULL while it is handed over). Starts are refused on a
-- shard that names another runner, so a runner that lost its lock cannot start work there.
CREATE TABLE shardq_shards (
    shard       INTEGER PRIMARY KEY,
    owner       TEXT,
    acquired_at BIGINT  NOT NULL
);
