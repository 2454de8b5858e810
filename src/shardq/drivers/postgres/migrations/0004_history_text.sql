-- History becomes JSON kept as text. Every start and finish appends an entry; on JSONB that
-- decodes and re-encodes the whole array (a quarter of the server's CPU per job in a runner
-- step); on text it is a string append. Readers parse it as before. (This rewrites the table
-- once, under an exclusive lock: on a large table, run it in a quiet moment.)
ALTER TABLE jobs ALTER COLUMN history TYPE TEXT USING history::text;
