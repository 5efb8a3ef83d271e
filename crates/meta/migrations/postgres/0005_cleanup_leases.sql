-- Until when (Unix milliseconds) the node that claimed a repository's cleanup turn
-- holds it. The node renews it while it works; a turn whose lease lapsed (its node
-- died) is handed to another node, and only such a turn.
ALTER TABLE repositories ADD COLUMN cleanup_lease_until BIGINT;
