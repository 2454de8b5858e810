-- Flow controls of each job type: a concurrency and a rate (a token bucket: tokens as of
-- tokens_at, at most rate_burst + 1), a pause, and a throttle (starts wait until
-- throttled_until). key_concurrency and key_rate are kept here for the runner, which
-- applies them per key in memory. A NULL limit is no limit.
CREATE TABLE shardq_controls (
    type            TEXT    PRIMARY KEY,
    concurrency     INTEGER CHECK (concurrency >= 0),
    key_concurrency INTEGER CHECK (key_concurrency >= 1),
    rate_count      INTEGER CHECK (rate_count >= 1),
    rate_per        REAL    CHECK (rate_per > 0),
    rate_burst      INTEGER CHECK (rate_burst >= 0),
    key_rate_count  INTEGER CHECK (key_rate_count >= 1),
    key_rate_per    REAL    CHECK (key_rate_per > 0),
    key_rate_burst  INTEGER CHECK (key_rate_burst >= 0),
    paused          INTEGER NOT NULL DEFAULT 0,
    throttled_until INTEGER,
    tokens          REAL,
    tokens_at       INTEGER,
    updated_at      INTEGER NOT NULL,
    CHECK ((rate_count IS NULL) = (rate_per IS NULL) AND (rate_count IS NULL) = (rate_burst IS NULL)),
    CHECK ((key_rate_count IS NULL) = (key_rate_per IS NULL)
           AND (key_rate_count IS NULL) = (key_rate_burst IS NULL))
);
-- Keys whose jobs wait (the runner holds them back in memory).
CREATE TABLE shardq_paused_keys (
    key       TEXT    PRIMARY KEY,
    paused_at INTEGER NOT NULL
);
-- A slot per job started under its type's concurrency limit. A slot holds while its job is
-- processing: a finish or a recovery needs no change here; the admission of the type
-- counts the slots whose job is still processing and deletes the others.
CREATE TABLE shardq_slots (
    job_id INTEGER PRIMARY KEY,
    type   TEXT    NOT NULL
);
CREATE INDEX shardq_slots_type ON shardq_slots (type);
