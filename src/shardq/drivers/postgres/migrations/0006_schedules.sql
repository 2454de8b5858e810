-- Schedules: one row per periodic or cron schedule, on the shard its name hashes to. The
-- owner of that shard fires its ticks; after_ms is the tick through which every tick is
-- handled (fired or dropped by the misfire policy), last_tick and last_job_id the most
-- recent tick that submitted a job. declared: declared in code (synced when a runner starts).
CREATE TABLE schedules (
    name        TEXT    PRIMARY KEY,
    shard       INTEGER NOT NULL,
    job_type    TEXT    NOT NULL,
    cron        TEXT,
    every_ms    BIGINT,
    tz          TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    priority    INTEGER NOT NULL,
    misfire     TEXT    NOT NULL,
    overlap     TEXT    NOT NULL,
    key         TEXT,
    declared    BOOLEAN NOT NULL DEFAULT FALSE,
    paused      BOOLEAN NOT NULL DEFAULT FALSE,
    after_ms    BIGINT  NOT NULL,
    last_tick   BIGINT,
    last_job_id BIGINT,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE INDEX schedules_shard ON schedules (shard);
-- The schedule and tick of a job a schedule submitted (NULL for every other job). Columns
-- without a default: adding them rewrites nothing, and no index covers them, so writing
-- them keeps the update HOT.
ALTER TABLE jobs ADD COLUMN schedule TEXT, ADD COLUMN tick BIGINT;
