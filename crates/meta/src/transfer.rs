//! Moving a single node's SQLite metadata into PostgreSQL (`berth migrate`).
//!
//! The copy is generic: the columns of each table are read from SQLite, each value is
//! converted by the type of the PostgreSQL column it goes to, and afterwards every
//! table is compared on both sides by row count and an order-independent checksum of
//! its rows. A new table needs one line in [`COPIED`] (or [`NOT_COPIED`]); a new
//! column needs nothing. A table that is in neither list stops the copy, so a schema
//! change cannot be left behind silently.
//!
//! Everything is written in one PostgreSQL transaction: an interrupted copy leaves
//! the target as it was, and a copy whose result would differ from the source (a
//! target that already holds other data) is rolled back. Rows go in with
//! `ON CONFLICT DO NOTHING`, so copying again onto a finished copy changes nothing.
//!
//! The target's triggers are off while rows are copied: they react to changes (a tag
//! pushed, a blob linked) and a copy is not one. What they maintain — live tag counts
//! and the garbage collector's review queues — is copied as the source has it, so the
//! target's collector resumes exactly the reviews the source had pending rather than
//! reviewing every blob and manifest anew.

use std::fmt;

use berth_oci::Digest;
use futures::{Stream, TryStreamExt};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{query, Postgres, QueryBuilder, Row, Sqlite};

use crate::{MetaError, PgMeta, Result, SqliteMeta};

/// Tables copied, parents before children, with an `ORDER BY` for a table whose rows
/// refer to each other (a group before its subgroups).
pub const COPIED: &[(&str, &str)] = &[
    ("users", ""),
    (
        "namespaces",
        "length(full_path) - length(replace(full_path, '/', '')), id",
    ),
    ("projects", ""),
    ("repositories", ""),
    ("blobs", ""),
    ("repository_blobs", ""),
    ("manifests", ""),
    ("manifest_blobs", ""),
    ("manifest_references", ""),
    ("tags", ""),
    ("members", ""),
    ("personal_access_tokens", ""),
    ("deploy_tokens", ""),
    ("ci_jobs", ""),
    ("ci_job_deploy_credentials", ""),
    ("settings", ""),
    ("expiration_policies", ""),
    ("leases", ""),
    ("cleanup_runs", ""),
    ("cleanup_log", ""),
    ("registry_protection_rules", ""),
    ("gc_blob_review_queue", ""),
    ("gc_manifest_review_queue", ""),
    ("gc_blob_deletions", ""),
    // What garbage collection freed, so the admin area's figures carry over.
    ("gc_freed", ""),
    // Signed-in browsers stay signed in (only digests of session ids are stored).
    ("web_sessions", ""),
    // So do docker's identity tokens (digests only, bound to their credentials).
    ("refresh_tokens", ""),
    // The token signing key: tokens the old node issued stay valid on the new ones.
    ("instance_secrets", ""),
    // The dependency proxy's cache (its blobs move with the other blobs).
    ("dependency_proxy_settings", ""),
    ("dependency_proxy_manifests", ""),
    ("dependency_proxy_blobs", ""),
];

/// Tables left behind, and why.
pub const NOT_COPIED: &[(&str, &str)] = &[
    (
        "uploads",
        "uploads in progress are not moved: their bytes stay in the old storage, and clients start them again",
    ),
    (
        "login_failures",
        "failed sign-ins only count for a minute; the new nodes start their limits afresh",
    ),
    (
        "_sqlx_migrations",
        "each database keeps its own migration history",
    ),
];

/// How a column's values travel: by the PostgreSQL column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int8,
    Int4,
    Bool,
    Text,
    Bytes,
}

impl Kind {
    fn of_pg(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "bigint" => Kind::Int8,
            "integer" => Kind::Int4,
            "boolean" => Kind::Bool,
            "text" | "character varying" => Kind::Text,
            "bytea" => Kind::Bytes,
            _ => return None,
        })
    }
}

/// A value typed for its PostgreSQL column; SQLite's integers are narrowed to it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int8(Option<i64>),
    Int4(Option<i32>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// Row count and an order-independent checksum (the sum of the rows' hashes) of a
/// table's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub rows: u64,
    sum: u128,
}

impl Tally {
    fn add(&mut self, row: &[Value]) {
        let mut h = Sha256::new();
        for v in row {
            let int = match v {
                Value::Int8(i) => *i,
                Value::Int4(i) => i.map(i64::from),
                Value::Bool(b) => b.map(i64::from),
                _ => None,
            };
            match (v, int) {
                (_, Some(i)) => {
                    h.update([1u8]);
                    h.update(i.to_le_bytes());
                }
                (Value::Text(Some(s)), _) => {
                    h.update([2u8]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                (Value::Bytes(Some(b)), _) => {
                    h.update([3u8]);
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
                _ => h.update([0u8]),
            }
        }
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        self.rows += 1;
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows, checksum {:032x}", self.rows, self.sum)
    }
}

/// One table compared on both sides.
#[derive(Debug, Clone)]
pub struct TableCheck {
    pub table: &'static str,
    pub source: Tally,
    pub target: Tally,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct CopyOutcome {
    /// Every table compared after the copy, inside its transaction.
    pub tables: Vec<TableCheck>,
    /// Whether the copy was committed: only when every table matches the source.
    pub committed: bool,
    /// Rows the copy added (0 when the target already held them all).
    pub inserted: u64,
}

/// Progress of a copy, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// `n` more source rows were written.
    Rows(u64),
    /// A table's rows are all written (the transaction is still open).
    TableDone(&'a str),
}

/// A consistent read of the source: one SQLite read transaction, so the blob list and
/// every table come from the same moment even if something writes meanwhile.
pub struct Snapshot {
    tx: sqlx::Transaction<'static, Sqlite>,
}

impl SqliteMeta {
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.read.begin().await?;
        // A deferred transaction takes its snapshot at its first read.
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .execute(&mut *tx)
            .await?;
        Ok(Snapshot { tx })
    }
}

/// A table and its columns, as both databases have them.
#[derive(Debug, Clone)]
struct TablePlan {
    table: &'static str,
    order_by: &'static str,
    columns: Vec<String>,
    kinds: Vec<Kind>,
    rows: u64,
}

impl TablePlan {
    fn misfit(&self, col: usize) -> MetaError {
        let (table, column) = (self.table, &self.columns[col]);
        MetaError::Conflict(format!(
            "a value of `{table}.{column}` does not fit its PostgreSQL column"
        ))
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn select(&self) -> String {
        let order = if self.order_by.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", self.order_by)
        };
        format!(
            "SELECT {} FROM \"{}\"{order}",
            self.column_list(),
            self.table
        )
    }
}

/// The tables to copy with their columns, checked against both schemas.
pub struct Plan {
    tables: Vec<TablePlan>,
}

impl Plan {
    /// Rows in the source, over all copied tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

impl Snapshot {
    /// Every blob in the source's metadata, with its recorded size.
    pub async fn blobs(&mut self) -> Result<Vec<(Digest, u64)>> {
        let rows = sqlx::query("SELECT digest, size FROM blobs ORDER BY digest")
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| {
                let d: String = r.get(0);
                let size: i64 = r.get(1);
                Ok((crate::common::digest(d)?, size.max(0) as u64))
            })
            .collect()
    }

    /// Rows of any source table.
    pub async fn count(&mut self, table: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{table}\""))
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(n as u64)
    }

    /// Match the source's tables and columns with the target's. Fails on a source
    /// table this code does not know, or a column the target lacks.
    pub async fn plan(&mut self, target: &PgMeta) -> Result<Plan> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let known = |n: &str| {
            COPIED.iter().any(|(t, _)| *t == n) || NOT_COPIED.iter().any(|(t, _)| *t == n)
        };
        if let Some(unknown) = names.iter().find(|n| !known(n)) {
            return Err(MetaError::Conflict(format!(
                "the source database has a table `{unknown}` that this version of berth migrate does not know how to move"
            )));
        }
        let mut tables = Vec::new();
        for (table, order_by) in COPIED {
            if !names.iter().any(|n| n == table) {
                return Err(MetaError::Conflict(format!(
                    "the source database has no table `{table}`"
                )));
            }
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                    .bind(table)
                    .fetch_all(&mut *self.tx)
                    .await?;
            let pg: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_all(target.pool())
            .await?;
            if pg.is_empty() {
                return Err(MetaError::Conflict(format!(
                    "the target database has no table `{table}`"
                )));
            }
            let mut kinds = Vec::new();
            for c in &columns {
                let Some((_, ty)) = pg.iter().find(|(n, _)| n == c) else {
                    return Err(MetaError::Conflict(format!(
                        "the target table `{table}` has no column `{c}`"
                    )));
                };
                let kind = Kind::of_pg(ty).ok_or_else(|| {
                    MetaError::Conflict(format!(
                        "column `{table}.{c}` has type {ty}, which berth migrate cannot copy"
                    ))
                })?;
                kinds.push(kind);
            }
            let rows = self.count(table).await?;
            tables.push(TablePlan {
                table,
                order_by,
                columns,
                kinds,
                rows,
            });
        }
        Ok(Plan { tables })
    }
}

fn sqlite_row(row: &SqliteRow, t: &TablePlan) -> Result<Vec<Value>> {
    let ints = |i| row.try_get::<Option<i64>, _>(i);
    t.kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            Ok(match kind {
                Kind::Int8 => Value::Int8(ints(i)?),
                Kind::Int4 => {
                    let narrow = ints(i)?.map(i32::try_from).transpose();
                    Value::Int4(narrow.map_err(|_| t.misfit(i))?)
                }
                // SQLite stores booleans as 0 and 1.
                Kind::Bool => Value::Bool(ints(i)?.map(|v| v != 0)),
                Kind::Text => Value::Text(row.try_get(i)?),
                Kind::Bytes => Value::Bytes(row.try_get(i)?),
            })
        })
        .collect()
}

fn pg_row(row: &PgRow, t: &TablePlan) -> Result<Vec<Value>> {
    t.kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            Ok(match kind {
                Kind::Int8 => Value::Int8(row.try_get(i)?),
                Kind::Int4 => Value::Int4(row.try_get(i)?),
                Kind::Bool => Value::Bool(row.try_get(i)?),
                Kind::Text => Value::Text(row.try_get(i)?),
                Kind::Bytes => Value::Bytes(row.try_get(i)?),
            })
        })
        .collect()
}

/// Rows per INSERT: PostgreSQL takes at most 65535 parameters a statement.
fn batch_rows(columns: usize) -> usize {
    (60_000 / columns.max(1)).clamp(1, 1000)
}

/// Bytes of values per INSERT (manifest payloads may be up to 4 MiB each).
const BATCH_BYTES: usize = 8 * 1024 * 1024;

async fn insert_batch(
    conn: &mut sqlx::PgConnection,
    t: &TablePlan,
    batch: &mut Vec<Vec<Value>>,
) -> Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "INSERT INTO \"{}\" ({}) ",
        t.table,
        t.column_list()
    ));
    qb.push_values(batch.drain(..), |mut b, row| {
        for v in row {
            match v {
                Value::Int8(x) => b.push_bind(x),
                Value::Int4(x) => b.push_bind(x),
                Value::Bool(x) => b.push_bind(x),
                Value::Text(x) => b.push_bind(x),
                Value::Bytes(x) => b.push_bind(x),
            };
        }
    });
    qb.push(" ON CONFLICT DO NOTHING");
    Ok(qb.build().execute(conn).await?.rows_affected())
}

/// The tally of the rows of `t` that `rows` streams, each read by `read`.
async fn tally<R>(
    mut rows: impl Stream<Item = sqlx::Result<R>> + Unpin,
    t: &TablePlan,
    read: fn(&R, &TablePlan) -> Result<Vec<Value>>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    while let Some(row) = rows.try_next().await? {
        tally.add(&read(&row, t)?);
    }
    Ok(tally)
}

/// Compare every copied table of the source with the target, changing nothing.
pub async fn compare(
    source: &mut Snapshot,
    target: &PgMeta,
    plan: &Plan,
) -> Result<Vec<TableCheck>> {
    let mut conn = target.pool().acquire().await?;
    let mut out = Vec::new();
    for t in &plan.tables {
        out.push(TableCheck {
            table: t.table,
            source: tally(query(&t.select()).fetch(&mut *source.tx), t, sqlite_row).await?,
            target: tally(query(&t.select()).fetch(&mut *conn), t, pg_row).await?,
        });
    }
    Ok(out)
}

/// Rows in the target's copied tables (0: a fresh database).
pub async fn target_rows(target: &PgMeta, plan: &Plan) -> Result<u64> {
    let mut n = 0;
    for t in &plan.tables {
        let sql = format!("SELECT count(*) FROM \"{}\"", t.table);
        let c: i64 = sqlx::query_scalar(&sql).fetch_one(target.pool()).await?;
        n += c as u64;
    }
    Ok(n)
}

/// Copy every table into the target in one transaction, compare, and commit only if
/// the target then holds exactly the source's rows. Identity sequences are moved past
/// the copied ids, so the target's next user, project or tag gets a fresh id.
pub async fn copy(
    source: &mut Snapshot,
    target: &PgMeta,
    plan: &Plan,
    on_progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<CopyOutcome> {
    let mut tx = target.pool().begin().await?;
    for t in &plan.tables {
        sqlx::query(&format!("ALTER TABLE \"{}\" DISABLE TRIGGER USER", t.table))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                MetaError::Conflict(format!(
                    "turning off the triggers of `{}` failed ({e}); the database user must own \
                     Berth's tables, as it does when Berth created them",
                    t.table
                ))
            })?;
    }
    let mut inserted = 0;
    let mut source_tallies = Vec::new();
    for t in &plan.tables {
        let sql = t.select();
        let mut rows = sqlx::query(&sql).fetch(&mut *source.tx);
        let mut tally = Tally::default();
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let max_rows = batch_rows(t.columns.len());
        while let Some(row) = rows.try_next().await? {
            let values = sqlite_row(&row, t)?;
            tally.add(&values);
            batch_bytes += values
                .iter()
                .map(|v| match v {
                    Value::Text(Some(s)) => s.len(),
                    Value::Bytes(Some(b)) => b.len(),
                    _ => 8,
                })
                .sum::<usize>();
            batch.push(values);
            if batch.len() >= max_rows || batch_bytes >= BATCH_BYTES {
                let n = batch.len() as u64;
                inserted += insert_batch(&mut tx, t, &mut batch).await?;
                batch_bytes = 0;
                on_progress(Progress::Rows(n));
            }
        }
        let n = batch.len() as u64;
        inserted += insert_batch(&mut tx, t, &mut batch).await?;
        on_progress(Progress::Rows(n));
        on_progress(Progress::TableDone(t.table));
        source_tallies.push(tally);
    }
    let mut tables = Vec::new();
    for (t, source) in plan.tables.iter().zip(source_tallies) {
        tables.push(TableCheck {
            table: t.table,
            source,
            target: tally(query(&t.select()).fetch(&mut *tx), t, pg_row).await?,
        });
    }
    if !tables.iter().all(TableCheck::matches) {
        tx.rollback().await?;
        return Ok(CopyOutcome {
            tables,
            committed: false,
            inserted: 0,
        });
    }
    for t in &plan.tables {
        let identity: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'YES'",
        )
        .bind(t.table)
        .fetch_all(&mut *tx)
        .await?;
        for col in identity {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), m) \
                 FROM (SELECT max(\"{col}\") AS m FROM \"{}\") s WHERE m IS NOT NULL",
                t.table
            ))
            .bind(t.table)
            .bind(&col)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!("ALTER TABLE \"{}\" ENABLE TRIGGER USER", t.table))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(CopyOutcome {
        tables,
        committed: true,
        inserted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;
    use crate::{NewUser, OrgMeta};

    fn user(name: &str, admin: bool) -> NewUser {
        NewUser {
            username: name.into(),
            name: name.into(),
            email: None,
            password_hash: Some(format!("hash-of-{name}")),
            admin,
        }
    }

    #[tokio::test]
    async fn copies_once_refuses_other_data_and_unknown_tables() {
        let Some(db) = TestDatabase::create("transfer").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = SqliteMeta::open(&dir.path().join("berth.db"))
            .await
            .unwrap();
        let root = src.create_user(&user("root", true), 1).await.unwrap();
        let bob = src.create_user(&user("bob", false), 2).await.unwrap();
        let dst = PgMeta::connect(db.url(), 2).await.unwrap();

        let mut snap = src.snapshot().await.unwrap();
        let plan = snap.plan(&dst).await.unwrap();
        // Two users and their personal namespaces.
        assert_eq!(plan.rows(), 4);
        assert_eq!(target_rows(&dst, &plan).await.unwrap(), 0);
        let mut rows = 0;
        let out = copy(&mut snap, &dst, &plan, &mut |p| {
            if let Progress::Rows(n) = p {
                rows += n
            }
        })
        .await
        .unwrap();
        assert!(out.committed);
        assert_eq!((out.inserted, rows), (4, 4));
        assert!(out.tables.iter().all(TableCheck::matches));

        // The target's own code reads what the source wrote, booleans included.
        let copied = dst.user_by_username("bob").await.unwrap().unwrap();
        assert_eq!((copied.id, copied.admin), (bob.id, false));
        assert!(dst.user(root.id).await.unwrap().unwrap().admin);
        assert_eq!(copied.password_hash.as_deref(), Some("hash-of-bob"));

        // Copying again adds nothing and still matches.
        let again = copy(&mut snap, &dst, &plan, &mut |_| {}).await.unwrap();
        assert!(again.committed);
        assert_eq!(again.inserted, 0);

        // New rows get ids past the copied ones.
        let carol = dst.create_user(&user("carol", false), 3).await.unwrap();
        assert!(carol.id > bob.id);

        // Now the target holds a row the source does not: compared, and refused.
        let checks = compare(&mut snap, &dst, &plan).await.unwrap();
        let users = checks.iter().find(|c| c.table == "users").unwrap();
        assert!(!users.matches());
        assert_eq!((users.source.rows, users.target.rows), (2, 3));
        let refused = copy(&mut snap, &dst, &plan, &mut |_| {}).await.unwrap();
        assert!(!refused.committed);

        // A table nobody told migrate about stops it.
        drop(snap);
        sqlx::query("CREATE TABLE extra (x INTEGER)")
            .execute(&src.write)
            .await
            .unwrap();
        let mut snap = src.snapshot().await.unwrap();
        let err = snap.plan(&dst).await.err().expect("refused").to_string();
        assert!(err.contains("`extra`"), "{err}");
    }
}
