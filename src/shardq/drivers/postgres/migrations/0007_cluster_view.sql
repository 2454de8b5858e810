-- What each runner publishes with its heartbeat (handlers running, its concurrency, jobs it
-- finished per second), and whether it was asked to drain (it then owns no shard and the
-- others leave it out of the ring). gone_at: when a peer found its session ended.
ALTER TABLE shardq_runners
    ADD COLUMN running    INTEGER          NOT NULL DEFAULT 0,
    ADD COLUMN capacity   INTEGER          NOT NULL DEFAULT 0,
    ADD COLUMN jobs_per_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN draining   BOOLEAN          NOT NULL DEFAULT FALSE,
    ADD COLUMN gone_at    BIGINT;
-- Recent membership events (joined, left, gone, drain), newest kept: each statement that
-- adds one deletes those more than 200 behind it.
CREATE TABLE shardq_runner_events (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT    NOT NULL,
    runner TEXT      NOT NULL,
    kind   TEXT      NOT NULL,
    host   TEXT      NOT NULL,
    pid    INTEGER   NOT NULL
);
