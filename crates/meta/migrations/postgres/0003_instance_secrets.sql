-- Secrets every node of the installation shares: the token signing key, so that a
-- token one node issued is accepted by all.
CREATE TABLE instance_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
