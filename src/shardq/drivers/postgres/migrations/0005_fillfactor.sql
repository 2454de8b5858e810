-- A start and a finish each write a new version of the job's row, and both stay HOT only if
-- the page has room for them (migration 3 says why that matters). A runner starts a run of
-- consecutive jobs in one transaction, so every row of a page takes its processing version
-- before any queued version can be pruned: at fillfactor 50 about one update in six did not
-- fit, went to another page and wrote an entry into every index of jobs. At 35 a page
-- keeps room for a new version of each of its rows (the processing one is the largest: it
-- gains the owner and a history entry). New pages only; existing rows are not moved.
ALTER TABLE jobs SET (fillfactor = 35);
