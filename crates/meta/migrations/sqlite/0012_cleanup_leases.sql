-- Until when (Unix milliseconds) the worker that claimed a repository's cleanup turn
-- holds it. The worker renews it while it works; a turn whose lease lapsed (its node
-- died) is handed to another worker.
ALTER TABLE repositories ADD COLUMN cleanup_lease_until INTEGER;
