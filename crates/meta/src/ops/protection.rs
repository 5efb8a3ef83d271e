//! [`crate::ProtectionMeta`], written once for both backends (see the crate doc).
//! Rules of a project are few (tag rules at most five), so they are read whole.

use async_trait::async_trait;
use berth_core::protection::{ProtectionLevel, RuleKind};
use sqlx::Row;

use crate::protection::{ProtectionMeta, ProtectionRule, RuleFields};
use crate::{MetaError, Result};

use super::{Db, DbRow};

/// Rules with their project's path (aliases: `r` the rules, `p` the projects).
const SELECT: &str = "SELECT r.id, r.project_id, r.kind, \
         CASE WHEN r.kind = 'repository' THEN lower(p.full_path) || r.pattern ELSE r.pattern END, \
         r.push_level, r.delete_level, r.immutable \
     FROM registry_protection_rules r JOIN projects p ON p.id = r.project_id";

fn kind_str(kind: RuleKind) -> &'static str {
    kind.as_str()
}

fn level(text: Option<String>) -> Option<ProtectionLevel> {
    text.as_deref().and_then(ProtectionLevel::parse)
}

fn rule_row(r: DbRow) -> ProtectionRule {
    let kind: String = r.get(2);
    ProtectionRule {
        id: r.get(0),
        project_id: r.get(1),
        kind: if kind == "repository" {
            RuleKind::Repository
        } else {
            RuleKind::Tag
        },
        pattern: r.get(3),
        push: level(r.get(4)),
        delete: level(r.get(5)),
        immutable: r.get(6),
    }
}

fn taken(kind: RuleKind) -> MetaError {
    MetaError::Conflict(match kind {
        RuleKind::Repository => "Repository path pattern has already been taken".into(),
        RuleKind::Tag => "Tag name pattern has already been taken".into(),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl ProtectionMeta for Db {
    async fn protection_rules(
        &self,
        project_id: i64,
        kind: RuleKind,
    ) -> Result<Vec<ProtectionRule>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE r.project_id = $1 AND r.kind = $2 ORDER BY r.id"
        ))
        .bind(project_id)
        .bind(kind_str(kind))
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(rule_row).collect())
    }

    async fn protection_rules_of_repository(&self, path: &str) -> Result<Vec<ProtectionRule>> {
        let rows = sqlx::query(&format!(
            "{SELECT} JOIN repositories x ON x.project_id = r.project_id \
             WHERE x.path = $1 ORDER BY r.id"
        ))
        .bind(path)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(rule_row).collect())
    }

    async fn create_protection_rule(
        &self,
        project_id: i64,
        kind: RuleKind,
        fields: &RuleFields,
        max_of_kind: Option<usize>,
        now: i64,
    ) -> Result<ProtectionRule> {
        let mut tx = self.write_tx().await?;
        // The project's row is the lock that keeps two concurrent creations from
        // both passing the count (PostgreSQL; SQLite has one writer).
        let exists: Option<i64> = sqlx::query_scalar(pick!(
            sqlite: "SELECT id FROM projects WHERE id = $1",
            postgres: "SELECT id FROM projects WHERE id = $1 FOR UPDATE"
        ))
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Err(MetaError::NotFound("Project not found".into()));
        }
        if let Some(max) = max_of_kind {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM registry_protection_rules \
                 WHERE project_id = $1 AND kind = $2",
            )
            .bind(project_id)
            .bind(kind_str(kind))
            .fetch_one(&mut *tx)
            .await?;
            if n >= max as i64 {
                return Err(MetaError::Conflict(format!(
                    "Maximum number of {} protection rules per project ({max}) reached",
                    kind.as_str()
                )));
            }
        }
        let inserted = sqlx::query_scalar(
            "INSERT INTO registry_protection_rules \
               (project_id, kind, pattern, push_level, delete_level, immutable, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(project_id)
        .bind(kind_str(kind))
        .bind(&fields.pattern)
        .bind(fields.push.map(|l| l.as_str()))
        .bind(fields.delete.map(|l| l.as_str()))
        .bind(fields.immutable)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => return Err(taken(kind)),
            Err(e) => return Err(e.into()),
        };
        let row = sqlx::query(&format!("{SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rule_row(row))
    }

    async fn update_protection_rule(
        &self,
        project_id: i64,
        kind: RuleKind,
        id: i64,
        fields: &RuleFields,
    ) -> Result<Option<ProtectionRule>> {
        let mut tx = self.write_tx().await?;
        let updated = sqlx::query(
            "UPDATE registry_protection_rules \
             SET pattern = $1, push_level = $2, delete_level = $3, immutable = $4 \
             WHERE id = $5 AND project_id = $6 AND kind = $7",
        )
        .bind(&fields.pattern)
        .bind(fields.push.map(|l| l.as_str()))
        .bind(fields.delete.map(|l| l.as_str()))
        .bind(fields.immutable)
        .bind(id)
        .bind(project_id)
        .bind(kind_str(kind))
        .execute(&mut *tx)
        .await;
        match updated {
            Ok(done) if done.rows_affected() == 0 => return Ok(None),
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(taken(kind)),
            Err(e) => return Err(e.into()),
        }
        let row = sqlx::query(&format!("{SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(rule_row(row)))
    }

    async fn delete_protection_rule(
        &self,
        project_id: i64,
        kind: RuleKind,
        id: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM registry_protection_rules WHERE id = $1 AND project_id = $2 AND kind = $3",
        )
        .bind(id)
        .bind(project_id)
        .bind(kind_str(kind))
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
