-- Only jobs with a dedupe key need an entry in its unique index. Every job update that
-- cannot be HOT (a start, a finish) inserts into each full index, so a full index on a
-- column that is NULL for most jobs costs a write per update for nothing.
ALTER TABLE jobs DROP CONSTRAINT jobs_dedupe_key_key;
CREATE UNIQUE INDEX jobs_dedupe_key ON jobs (dedupe_key) WHERE dedupe_key IS NOT NULL;
