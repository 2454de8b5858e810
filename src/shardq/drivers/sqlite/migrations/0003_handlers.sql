-- The job types runners have handlers for: the last runner seen with each, and when. A
-- runner that lacks a type's handler lets its jobs wait while some runner has had one
-- within the grace period (a restart into another version), instead of dead-lettering them.
CREATE TABLE shardq_handlers (
    type     TEXT    PRIMARY KEY,
    runner   TEXT    NOT NULL,
    seen_at  INTEGER NOT NULL
);
