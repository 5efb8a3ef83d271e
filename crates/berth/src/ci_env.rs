//! `berth ci-env`: Berth is not a CI server, but it mints the per-job credentials a
//! runner needs and prints GitLab's CI/CD registry variables for it to `eval`.

use std::time::Duration;

use anyhow::{bail, Context};
use berth_meta::{Meta, Source};
use berth_server::org;
use clap::Args;

use crate::config::Config;
use crate::CommonArgs;

#[derive(Args)]
pub struct CiEnvArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The project the job belongs to (full path). Mints a new job.
    #[arg(long, required_unless_present = "finish", conflicts_with = "finish")]
    project: Option<String>,
    /// The user the job runs as (its permissions apply); default: the project's creator.
    #[arg(long)]
    user: Option<String>,
    /// The job's timeout: its credentials stop working after this long, e.g. 1h.
    #[arg(long, default_value = "1h")]
    timeout: humantime::Duration,
    /// The registry's host[:port] as clients reach it; default: from the external URL,
    /// else the listen address.
    #[arg(long)]
    registry: Option<String>,
    /// End job ID: its credentials stop working at once.
    #[arg(long, value_name = "JOB")]
    finish: Option<i64>,
}

fn registry_host(cfg: &Config, explicit: Option<&str>) -> String {
    if let Some(h) = explicit {
        return h.to_string();
    }
    if cfg.external_url.is_none() {
        eprintln!(
            "warning: no external_url is configured (berth.toml, BERTH_EXTERNAL_URL), so \
             CI_REGISTRY is the listen address {}; runners on other machines need the \
             registry's public address: set external_url as `berth serve` has it, or pass \
             --registry",
            cfg.listen
        );
    }
    if let Some(url) = &cfg.external_url {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        return rest
            .trim_end_matches('/')
            .split('/')
            .next()
            .unwrap_or(rest)
            .to_string();
    }
    cfg.listen.clone()
}

/// The project's `gitlab-deploy-token`, or one of a group above it.
async fn gitlab_deploy_token(
    meta: &dyn Meta,
    project_id: i64,
) -> anyhow::Result<Option<berth_meta::DeployToken>> {
    let now = berth_server::state::now_ms();
    let usable = |t: &berth_meta::DeployToken| {
        t.name == "gitlab-deploy-token" && !t.revoked && t.expires_at.is_none_or(|e| e > now)
    };
    if let Some(t) = meta
        .deploy_tokens(Some(Source::Project(project_id)))
        .await?
        .into_iter()
        .find(usable)
    {
        return Ok(Some(t));
    }
    for t in meta.deploy_tokens(None).await?.into_iter().filter(usable) {
        if matches!(t.source, Source::Namespace(_))
            && meta.deploy_token_covers(t.source, project_id).await?
        {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// End a job and say which: its credentials stop working at once.
async fn finish(meta: &dyn Meta, id: i64) -> anyhow::Result<()> {
    let job = meta
        .job(id)
        .await?
        .with_context(|| format!("there is no job {id}"))?;
    if !meta.finish_job(id, berth_server::state::now_ms()).await? {
        bail!("job {id} has already ended");
    }
    let project = match meta.project(job.project_id).await? {
        Some(p) => p.full_path,
        None => format!("#{}", job.project_id),
    };
    let user = match meta.user(job.user_id).await? {
        Some(u) => u.username,
        None => format!("#{}", job.user_id),
    };
    println!(
        "Ended job {id} of project {project} (running as {user}): its CI_JOB_TOKEN, \
         CI_REGISTRY_PASSWORD and CI_DEPLOY_PASSWORD no longer work."
    );
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub async fn run(cfg: Config, args: CiEnvArgs) -> anyhow::Result<()> {
    let meta = crate::bootstrap::open_meta(&cfg).await?;
    let meta: &dyn Meta = &*meta;
    if let Some(job) = args.finish {
        return finish(meta, job).await;
    }
    let path = args.project.as_deref().unwrap_or_default();
    let project = meta
        .project_by_path(path)
        .await?
        .with_context(|| format!("no project at {path}"))?;
    let user = match &args.user {
        Some(name) => meta
            .user_by_username(name)
            .await?
            .with_context(|| format!("no user named {name}"))?,
        None => org::default_job_user(meta, &project)
            .await?
            .context("the project has no creator; name the job's user with --user")?,
    };
    let timeout: Duration = args.timeout.into();
    let (job, secret) = org::mint_job(meta, &project, &user, timeout).await?;
    let host = registry_host(&cfg, args.registry.as_deref());
    let mut vars = vec![
        ("CI_JOB_ID", job.id.to_string()),
        ("CI_PROJECT_PATH", project.full_path.clone()),
        ("CI_REGISTRY", host.clone()),
        (
            "CI_REGISTRY_IMAGE",
            format!("{host}/{}", project.full_path.to_ascii_lowercase()),
        ),
        ("CI_REGISTRY_USER", "gitlab-ci-token".to_string()),
        ("CI_REGISTRY_PASSWORD", secret.clone()),
        ("CI_JOB_TOKEN", secret.clone()),
    ];
    let secret_for_proxy = secret;
    // GitLab's dependency proxy variables: the job token signs in, and the prefixes
    // name the project's top-level group and its own group.
    let top = project.full_path.split('/').next().unwrap_or_default();
    let own = project
        .full_path
        .rsplit_once('/')
        .map_or(top, |(group, _)| group);
    vars.extend([
        ("CI_DEPENDENCY_PROXY_SERVER", host.clone()),
        (
            "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX",
            format!(
                "{host}/{}/dependency_proxy/containers",
                top.to_ascii_lowercase()
            ),
        ),
        (
            "CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX",
            format!(
                "{host}/{}/dependency_proxy/containers",
                own.to_ascii_lowercase()
            ),
        ),
        ("CI_DEPENDENCY_PROXY_USER", "gitlab-ci-token".to_string()),
        ("CI_DEPENDENCY_PROXY_PASSWORD", secret_for_proxy),
    ]);
    // GitLab hands a deploy token named gitlab-deploy-token to jobs as CI_DEPLOY_USER /
    // CI_DEPLOY_PASSWORD. Its secret is stored hashed, so the job gets a secret of its
    // own that acts as that deploy token until the job ends.
    if let Some(t) = gitlab_deploy_token(meta, project.id).await? {
        let password = org::mint_job_deploy_secret(meta, &job, &t).await?;
        vars.push(("CI_DEPLOY_USER", t.username));
        vars.push(("CI_DEPLOY_PASSWORD", password));
    }
    for (k, v) in vars {
        println!("export {k}={}", shell_quote(&v));
    }
    Ok(())
}
