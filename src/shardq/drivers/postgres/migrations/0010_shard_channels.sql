-- Whether a runner listens on the channel of each shard it owns: submits are announced on
-- shard channels only while every live runner does (drivers/postgres/hearing.py).
ALTER TABLE shardq_runners ADD COLUMN hears_shards BOOLEAN NOT NULL DEFAULT FALSE;
