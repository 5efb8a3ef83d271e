-- A CI job's CI_DEPLOY_PASSWORD: a per-job secret that acts as the project's
-- `gitlab-deploy-token` while the job runs. The deploy token's own secret is stored
-- hashed and cannot be handed out again, so each job gets its own.
CREATE TABLE ci_job_deploy_credentials (
    job_id          INTEGER PRIMARY KEY REFERENCES ci_jobs(id) ON DELETE CASCADE,
    deploy_token_id INTEGER NOT NULL REFERENCES deploy_tokens(id) ON DELETE CASCADE,
    token_digest    TEXT NOT NULL UNIQUE
);
