-- How many times a repository's cleanup turn has been claimed. A node renews and
-- ends only the claim it took, so one whose lease lapsed (its turn handed on) cannot
-- end the turn of the node that took it over.
ALTER TABLE repositories ADD COLUMN cleanup_claim BIGINT;
