//! [`crate::GcMeta`], written once for both backends (see the crate doc).
//!
//! With PostgreSQL several nodes run GC workers against one database. Listing due
//! reviews claims them there (`FOR UPDATE SKIP LOCKED`, then a claim with an expiry),
//! so each node gets its own items; a review itself locks what it decides about (the
//! repository's row for a manifest, the blob's row for a blob), so it cannot race a
//! push. SQLite's single writer makes both unnecessary: it lists plainly.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures::TryStreamExt;
use berth_oci::Digest;
use sqlx::Row;

use crate::common::{digest, placeholders, LIVE_LAYERS_SIZES, TAGGED};
use crate::gc::{gc_hour, BlobRecord, GcFreed, GcMeta, ManifestReview, SweepReport};

use crate::Result;

/// Projects whose registry sizes one statement sums (bound parameters stay far below
/// SQLite's and PostgreSQL's limits).
const SIZES_PER_STATEMENT: usize = 500;

use super::registry::lock_repo;
use super::{retry_deadlocks, Conn, Db, DbKind, DbRow, CONCURRENT_WRITERS};

/// Delete a blob's metadata and record its bytes as pending deletion.
pub(super) async fn delete_blob(conn: &mut Conn, digest: &str, size: i64) -> Result<()> {
    delete_blobs(conn, &[(digest, size)]).await
}

/// Run `sql`, which ends in `IN`, over the list `keys` (nothing when it is empty).
async fn execute_in<T>(conn: &mut Conn, sql: &str, keys: &[T]) -> Result<()>
where
    T: for<'q> sqlx::Encode<'q, DbKind> + sqlx::Type<DbKind> + Clone + Send + 'static,
{
    if keys.is_empty() {
        return Ok(());
    }
    let sql = format!("{sql} ({})", placeholders(keys.len()));
    let mut q = sqlx::query(&sql);
    for k in keys {
        q = q.bind(k.clone());
    }
    q.execute(conn).await?;
    Ok(())
}

/// [`delete_blob`] for several blobs (`(digest, size)`), three statements for all.
async fn delete_blobs(conn: &mut Conn, blobs: &[(&str, i64)]) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    let digests: Vec<String> = blobs.iter().map(|(d, _)| d.to_string()).collect();
    for table in ["repository_blobs", "blobs"] {
        let sql = format!("DELETE FROM {table} WHERE digest IN");
        execute_in(&mut *conn, &sql, &digests).await?;
    }
    const NOW: &str = pick!(
        sqlite: "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        postgres: "berth_now_ms()"
    );
    let rows: Vec<String> = (0..blobs.len())
        .map(|i| format!("(${}, ${}, {NOW})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "INSERT INTO gc_blob_deletions (digest, size, queued_at) VALUES {} \
         ON CONFLICT (digest) DO NOTHING",
        rows.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for (d, size) in blobs {
        q = q.bind(*d).bind(*size);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Rows of `digest, size`.
/// Digests bound in one statement at most (well under both databases' limits).
const DIGEST_PAGE: usize = 500;

fn blob_record(r: DbRow) -> Result<BlobRecord> {
    Ok(BlobRecord { digest: digest(r.get(0))?, size: r.get(1) })
}

fn blob_records(rows: Vec<DbRow>) -> Result<Vec<BlobRecord>> {
    rows.into_iter().map(blob_record).collect()
}

/// Items reviewed in one transaction. Batches save a commit and (PostgreSQL) a lock
/// hand-over per item, but pushes wait meanwhile: for the batch's repositories on
/// PostgreSQL, for the one writer on SQLite. Measured at full size with 4 clients
/// pushing into one repository (`bench/scale.py --online-gc`): on PostgreSQL 50
/// manifests and 200 blobs drained 100,000 of each in 239 s with push p99 240 ms,
/// 20 and 50 took 297 s and 256 ms; on SQLite 50 and 200 put push p99 at 920 ms
/// while 20 and 50 kept it at 300 ms and drained faster.
const MANIFESTS_PER_TRANSACTION: usize = pick!(sqlite: 20, postgres: 50);
const BLOBS_PER_TRANSACTION: usize = pick!(sqlite: 50, postgres: 200);

/// Review manifests `ids` in one transaction (see [`GcMeta::review_manifests`]).
///
/// A handful of statements for the whole batch, not a few per manifest: the batch
/// holds its repositories' locks throughout, and pushes into those repositories wait
/// for it (on PostgreSQL 50 manifests reviewed one by one held a busy repository for
/// some 200 round trips).
async fn review_manifest_chunk(
    db: &Db,
    ids: &[i64],
    delete_untagged: bool,
    keep_since: i64,
) -> Result<Vec<ManifestReview>> {
    retry_deadlocks(move || async move {
        let mut tx = db.write_tx().await?;
        let marks = placeholders(ids.len());
        // Their repositories' locks first, in id order, as every writer of a
        // repository takes its lock first (a push holds one at a time). A manifest
        // never changes repository, so this list holds under the locks.
        let repos_sql = format!(
            "SELECT DISTINCT repository_id FROM manifests WHERE id IN ({marks}) \
             ORDER BY repository_id"
        );
        let mut q = sqlx::query_scalar::<_, i64>(&repos_sql);
        for id in ids {
            q = q.bind(id);
        }
        let repos = q.fetch_all(&mut *tx).await?;
        for repo in repos {
            lock_repo(&mut tx, repo).await?;
        }
        let states = manifest_states(&mut tx, ids, delete_untagged, keep_since).await?;
        let mut outcomes = Vec::with_capacity(ids.len());
        let (mut dequeue, mut doomed) = (Vec::new(), Vec::new());
        for id in ids {
            let outcome = match states.get(id) {
                None => ManifestReview::Gone,
                Some(Need::Needed) => ManifestReview::Kept,
                Some(Need::Window(left_at)) => {
                    // Within a tag's undo window: review it again when the window ends
                    // (a review is due once its queued_at is a review delay old).
                    sqlx::query(pick!(
                        sqlite: "UPDATE gc_manifest_review_queue SET queued_at = $1, \
                                 event = 'tag_history' WHERE manifest_id = $2",
                        postgres: "UPDATE gc_manifest_review_queue SET queued_at = $1, \
                                   event = 'tag_history', claimed_until = NULL, \
                                   claimed_by = NULL WHERE manifest_id = $2",
                    ))
                    .bind(left_at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    outcomes.push(ManifestReview::Kept);
                    continue;
                }
                Some(Need::Nothing) => {
                    doomed.push(*id);
                    ManifestReview::Deleted
                }
            };
            dequeue.push(*id);
            outcomes.push(outcome);
        }
        // The queue entries go before the deletions: deleting one manifest queues
        // those it leaves (its index children, its referrers) again, and an entry
        // queued so must stay even when that manifest is of this batch, kept because
        // the deleted one still needed it when the batch was decided. It is reviewed
        // again later, as if alone.
        let sql = "DELETE FROM gc_manifest_review_queue WHERE manifest_id IN";
        execute_in(&mut tx, sql, &dequeue).await?;
        // Cascades remove their blob links and child references; triggers queue those
        // blobs and children (and referrers of these) for review.
        execute_in(&mut tx, "DELETE FROM manifests WHERE id IN", &doomed).await?;
        tx.commit().await?;
        Ok(outcomes)
    })
    .await
}

/// What still needs a manifest, as a review decides it.
enum Need {
    /// A live tag, an index listing it, a present subject (or untagged manifests are
    /// kept).
    Needed,
    /// Only a tag that left it at this time, after `keep_since`: kept while the undo
    /// window lasts. Strictly after: a manifest kept is queued again at that time, and
    /// a review is due once `queued_at <= keep_since`, so a tag that left at exactly
    /// `keep_since` must not keep it, or one GC round would review it forever.
    Window(i64),
    /// Nothing.
    Nothing,
}

/// The [`Need`] of each of manifests `ids` that still exists, in one query. Under
/// the repositories' locks, not in a node's memory: every node keeps the window,
/// whatever its clock and queue said.
async fn manifest_states(
    tx: &mut Conn,
    ids: &[i64],
    delete_untagged: bool,
    keep_since: i64,
) -> Result<HashMap<i64, Need>> {
    let marks = placeholders(ids.len());
    let window = ids.len() + 1;
    let sql = format!(
        "SELECT m.id, {TAGGED} \
              OR EXISTS (SELECT 1 FROM manifest_references r WHERE r.child_id = m.id) \
              OR EXISTS (SELECT 1 FROM manifests s \
                         WHERE s.repository_id = m.repository_id AND s.digest = m.subject_digest), \
                (SELECT CAST(MAX(t.deleted_at) AS BIGINT) FROM tags t \
                 WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest \
                   AND t.deleted_at IS NOT NULL AND t.deleted_at > ${window}) \
         FROM manifests m WHERE m.id IN ({marks})"
    );
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(id);
    }
    let rows = q.bind(keep_since).fetch_all(&mut *tx).await?;
    let mut states = HashMap::with_capacity(rows.len());
    for r in rows {
        let needed: bool = r.get(1);
        let left: Option<i64> = r.get(2);
        let need = match (delete_untagged, needed, left) {
            (false, _, _) | (true, true, _) => Need::Needed,
            (true, false, Some(at)) => Need::Window(at),
            (true, false, None) => Need::Nothing,
        };
        states.insert(r.get(0), need);
    }
    Ok(states)
}

/// The keys of up to `limit` items of review `queue` due at `before`, oldest first.
/// SQLite lists (one node); PostgreSQL lists and claims them, a write.
async fn due<T>(db: &Db, queue: &str, key: &str, before: i64, limit: i64) -> Result<Vec<T>>
where
    T: for<'r> sqlx::Decode<'r, DbKind> + sqlx::Type<DbKind> + Send + Unpin,
{
    let sql = pick!(
        sqlite: format!(
            "SELECT {key} FROM {queue} WHERE queued_at <= $1 ORDER BY queued_at LIMIT $2"
        ),
        postgres: super::claim_sql(queue, key),
    );
    let q = sqlx::query_scalar::<_, T>(&sql).bind(before).bind(limit);
    Ok(pick!(sqlite: q, postgres: q.bind(super::CLAIM_MS))
        .fetch_all(pick!(sqlite: db.reader(), postgres: db.writer()))
        .await?)
}

/// Review a page of distinct blobs (sorted) in one transaction; the removed ones.
async fn review_blob_page(db: &Db, page: &[&str]) -> Result<Vec<BlobRecord>> {
    let marks = placeholders(page.len());
    let (removed, skipped) = retry_deadlocks(|| {
        let marks = &marks;
        async move {
            let mut tx = db.write_tx().await?;
            let mut reviewed: Vec<String> = page.iter().map(|d| d.to_string()).collect();
            let mut dequeued = reviewed.clone();
            if CONCURRENT_WRITERS {
                // The queue entries first, then the blob rows, skipping what another
                // transaction holds: a manifest deletion queuing the blob again (its
                // entry, fresh once it commits), a push referencing it (the blob row,
                // locked FOR SHARE or by a new link's key check), another node's review.
                // Whoever holds it queues it again or reviews it; it stays queued.
                // Only entries locked here are removed: an entry queued meanwhile must
                // stay, or a blob nothing references could be left unreviewed.
                let select = |table: &str, lock: &str| {
                    format!(
                        "SELECT digest FROM {table} WHERE digest IN ({marks}) \
                         ORDER BY digest{lock}"
                    )
                };
                const SKIP: &str = " FOR UPDATE SKIP LOCKED";
                let queued = digests_of(&mut tx, &select("gc_blob_review_queue", ""), page).await?;
                let entries =
                    digests_of(&mut tx, &select("gc_blob_review_queue", SKIP), page).await?;
                let present = digests_of(&mut tx, &select("blobs", ""), page).await?;
                let free = digests_of(&mut tx, &select("blobs", SKIP), page).await?;
                reviewed.retain(|d| {
                    (entries.contains(d) || !queued.contains(d))
                        && (free.contains(d) || !present.contains(d))
                });
                dequeued = reviewed.iter().filter(|d| entries.contains(*d)).cloned().collect();
            }
            let removed = remove_unreferenced(&mut tx, &reviewed).await?;
            // Last, so the unlink triggers of the removal do not leave them queued again.
            let sql = "DELETE FROM gc_blob_review_queue WHERE digest IN";
            execute_in(&mut tx, sql, &dequeued).await?;
            tx.commit().await?;
            let skipped: Vec<&str> =
                page.iter().copied().filter(|d| !reviewed.iter().any(|r| r == d)).collect();
            Ok((removed, skipped))
        }
    })
    .await?;
    release_skipped(db, &skipped).await?;
    Ok(removed)
}

/// Give up this node's claim on blobs a review skipped (PostgreSQL; SQLite's single
/// writer never skips, so `skipped` is empty there and the loop does nothing): their claim was
/// taken when they were listed, and a claim outlives the review, so without this they
/// would wait out [`super::CLAIM_MS`] unreviewed. They are due again a review delay
/// from now, as if queued again by whoever held them (which it may have done already).
/// One statement each, after the review's commit: each waits for that holder while
/// holding no other lock, so it cannot deadlock with a trigger queuing several blobs.
async fn release_skipped(db: &Db, skipped: &[&str]) -> Result<()> {
    for d in skipped {
        sqlx::query(pick!(
            sqlite: "UPDATE gc_blob_review_queue SET queued_at = \
                     MAX(queued_at, CAST(unixepoch('subsec') * 1000 AS INTEGER)) WHERE digest = $1",
            postgres: "UPDATE gc_blob_review_queue SET queued_at = GREATEST(queued_at, berth_now_ms()), \
                       claimed_until = NULL, claimed_by = NULL WHERE digest = $1",
        ))
        .bind(*d)
        .execute(db.writer())
        .await?;
    }
    Ok(())
}

/// The digests `sql` selects, given `page` for its one list of digests.
async fn digests_of(tx: &mut Conn, sql: &str, page: &[&str]) -> Result<HashSet<String>> {
    let mut q = sqlx::query_scalar::<_, String>(sql);
    for d in page {
        q = q.bind(*d);
    }
    Ok(q.fetch_all(tx).await?.into_iter().collect())
}

/// Of `digests` (locked, or a single writer), remove from metadata those nothing
/// references, recording their bytes as pending deletion; return them.
async fn remove_unreferenced(tx: &mut Conn, digests: &[String]) -> Result<Vec<BlobRecord>> {
    if digests.is_empty() {
        return Ok(Vec::new());
    }
    let marks = placeholders(digests.len());
    // A group's dependency proxy cache holding the blob references it too.
    let sql = format!(
        "SELECT b.digest, b.size FROM blobs b WHERE b.digest IN ({marks}) \
         AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.digest = b.digest) \
         AND NOT EXISTS (SELECT 1 FROM dependency_proxy_blobs pb WHERE pb.digest = b.digest) \
         ORDER BY b.digest"
    );
    let mut q = sqlx::query(&sql);
    for d in digests {
        q = q.bind(d.as_str());
    }
    let doomed = blob_records(q.fetch_all(&mut *tx).await?)?;
    let pairs: Vec<(&str, i64)> = doomed.iter().map(|b| (b.digest.as_str(), b.size)).collect();
    delete_blobs(&mut *tx, &pairs).await?;
    Ok(doomed)
}

#[async_trait]
impl GcMeta for Db {
    async fn due_manifest_reviews(&self, before: i64, limit: i64) -> Result<Vec<i64>> {
        due(self, "gc_manifest_review_queue", "manifest_id", before, limit).await
    }

    async fn review_manifests(
        &self,
        ids: &[i64],
        delete_untagged: bool,
        keep_since: i64,
    ) -> Result<Vec<ManifestReview>> {
        let mut outcomes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MANIFESTS_PER_TRANSACTION) {
            outcomes.extend(review_manifest_chunk(self, chunk, delete_untagged, keep_since).await?);
        }
        Ok(outcomes)
    }

    async fn pending_blob_deletions(&self, limit: i64) -> Result<Vec<BlobRecord>> {
        let rows =
            sqlx::query("SELECT digest, size FROM gc_blob_deletions ORDER BY queued_at LIMIT $1")
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
        blob_records(rows)
    }

    async fn blob_deletion_pending(&self, d: &Digest) -> Result<bool> {
        let hit: Option<i64> =
            sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM gc_blob_deletions WHERE digest = $1")
                .bind(d.as_str())
                .fetch_optional(self.writer())
                .await?;
        Ok(hit.is_some())
    }

    async fn blob_deletions_pending(&self, digests: &[Digest]) -> Result<HashSet<Digest>> {
        let mut found = HashSet::new();
        for page in digests.chunks(DIGEST_PAGE) {
            let sql = format!(
                "SELECT digest FROM gc_blob_deletions WHERE digest IN ({})",
                placeholders(page.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for d in page {
                q = q.bind(d.as_str());
            }
            // The writer, as for one blob: another node may just have finished it.
            for d in q.fetch_all(self.writer()).await? {
                found.insert(digest(d)?);
            }
        }
        Ok(found)
    }

    async fn blobs_known(&self, digests: &[Digest]) -> Result<HashSet<Digest>> {
        let mut found = HashSet::new();
        for page in digests.chunks(DIGEST_PAGE) {
            let sql = format!(
                "SELECT digest FROM blobs WHERE digest IN ({})",
                placeholders(page.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for d in page {
                q = q.bind(d.as_str());
            }
            for d in q.fetch_all(self.reader()).await? {
                found.insert(digest(d)?);
            }
        }
        Ok(found)
    }

    async fn clear_blob_deletions(&self, digests: &[Digest]) -> Result<()> {
        for page in digests.chunks(DIGEST_PAGE) {
            let sql = format!(
                "DELETE FROM gc_blob_deletions WHERE digest IN ({})",
                placeholders(page.len())
            );
            let mut q = sqlx::query(&sql);
            for d in page {
                q = q.bind(d.as_str());
            }
            q.execute(self.writer()).await?;
        }
        Ok(())
    }

    async fn clear_blob_deletion(&self, d: &Digest) -> Result<()> {
        sqlx::query("DELETE FROM gc_blob_deletions WHERE digest = $1")
            .bind(d.as_str())
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn due_blob_reviews(&self, before: i64, limit: i64) -> Result<Vec<Digest>> {
        let rows: Vec<String> = due(self, "gc_blob_review_queue", "digest", before, limit).await?;
        rows.into_iter().map(digest).collect()
    }

    async fn review_blobs(&self, digests: &[Digest]) -> Result<Vec<BlobRecord>> {
        let mut removed = Vec::new();
        let mut sorted: Vec<&str> = digests.iter().map(Digest::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        for page in sorted.chunks(BLOBS_PER_TRANSACTION) {
            removed.extend(review_blob_page(self, page).await?);
        }
        Ok(removed)
    }

    async fn postpone_blob_review(&self, d: &Digest, now: i64) -> Result<()> {
        let queued: Option<i64> =
            sqlx::query_scalar("SELECT queued_at FROM gc_blob_review_queue WHERE digest = $1")
                .bind(d.as_str())
                .fetch_optional(self.reader())
                .await?;
        if queued.is_some_and(|q| q < now) {
            sqlx::query("UPDATE gc_blob_review_queue SET queued_at = $1 WHERE digest = $2")
                .bind(now)
                .bind(d.as_str())
                .execute(self.writer())
                .await?;
        }
        Ok(())
    }

    async fn review_queue_lengths(&self) -> Result<(i64, i64)> {
        let m: i64 = sqlx::query_scalar("SELECT count(*) FROM gc_manifest_review_queue")
            .fetch_one(self.reader())
            .await?;
        let b: i64 = sqlx::query_scalar("SELECT count(*) FROM gc_blob_review_queue")
            .fetch_one(self.reader())
            .await?;
        Ok((m, b))
    }

    async fn record_gc_freed(&self, freed: &GcFreed, now: i64) -> Result<()> {
        if *freed == GcFreed::default() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO gc_freed (hour, manifests, blobs, bytes) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hour) DO UPDATE SET manifests = gc_freed.manifests + excluded.manifests, \
             blobs = gc_freed.blobs + excluded.blobs, bytes = gc_freed.bytes + excluded.bytes",
        )
        .bind(gc_hour(now))
        .bind(freed.manifests)
        .bind(freed.blobs)
        .bind(freed.bytes)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn gc_freed_since(&self, since: i64) -> Result<GcFreed> {
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(manifests), 0) AS BIGINT), \
             CAST(COALESCE(SUM(blobs), 0) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) \
             FROM gc_freed WHERE hour >= $1",
        )
        .bind(gc_hour(since))
        .fetch_one(self.reader())
        .await?;
        Ok(GcFreed {
            manifests: r.get(0),
            blobs: r.get(1),
            bytes: r.get(2),
        })
    }

    async fn sweep(
        &self,
        delete_untagged: bool,
        older_than: i64,
        tags_left_since: i64,
        dry_run: bool,
    ) -> Result<SweepReport> {
        // A server's online GC may run meanwhile: its reviews lock rows one by one
        // while this waits, table by table, and PostgreSQL can find the two waiting on
        // each other (seen: `berth gc --dry-run` beside a server's review rounds). It
        // aborts one side; a sweep so aborted runs again, as a review does.
        retry_deadlocks(move || async move {
            let mut tx = self.write_tx().await?;
            if CONCURRENT_WRITERS {
                // Writers wait (readers do not) while the whole graph is marked and swept, as
                // under SQLite's write lock. repositories first: every writer of registry
                // content locks its repository first, so none holds a later table meanwhile.
                sqlx::query(
                    "LOCK TABLE repositories, blobs, repository_blobs, manifests, manifest_blobs, \
                     manifest_references, tags IN EXCLUSIVE MODE",
                )
                .execute(&mut *tx)
                .await?;
            }
            let mut report = SweepReport::default();
            if delete_untagged {
                // Mark: tagged manifests, then (repeatedly) their index children and
                // the referrers of anything marked.
                sqlx::query(pick!(
                    sqlite: "CREATE TEMP TABLE IF NOT EXISTS gc_live (id INTEGER PRIMARY KEY)",
                    postgres: "CREATE TEMP TABLE gc_live (id BIGINT PRIMARY KEY) ON COMMIT DROP",
                ))
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM gc_live").execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO gc_live SELECT m.id FROM manifests m JOIN tags t \
                     ON t.repository_id = m.repository_id AND t.manifest_digest = m.digest \
                     WHERE t.deleted_at IS NULL ON CONFLICT DO NOTHING",
                )
                .execute(&mut *tx)
                .await?;
                // Young manifests may belong to a push in flight (children pushed before
                // their index): keep them and what they reach.
                sqlx::query(
                    "INSERT INTO gc_live SELECT id FROM manifests WHERE created_at >= $1 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(older_than)
                .execute(&mut *tx)
                .await?;
                // A tag left them within the undo window: they may be restored.
                sqlx::query(
                    "INSERT INTO gc_live SELECT m.id FROM manifests m JOIN tags t \
                     ON t.repository_id = m.repository_id AND t.manifest_digest = m.digest \
                     WHERE t.deleted_at IS NOT NULL AND t.deleted_at > $1 ON CONFLICT DO NOTHING",
                )
                .bind(tags_left_since)
                .execute(&mut *tx)
                .await?;
                loop {
                    let added = sqlx::query(
                        "INSERT INTO gc_live \
                         SELECT r.child_id FROM manifest_references r JOIN gc_live l ON l.id = r.parent_id \
                         UNION SELECT m.id FROM manifests m JOIN manifests s \
                           ON s.repository_id = m.repository_id AND s.digest = m.subject_digest \
                         JOIN gc_live l ON l.id = s.id WHERE true \
                         ON CONFLICT DO NOTHING",
                    )
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if added == 0 {
                        break;
                    }
                }
                // Sweep parents before children so no reference blocks a delete.
                sqlx::query(
                    "DELETE FROM manifest_references WHERE parent_id NOT IN (SELECT id FROM gc_live)",
                )
                .execute(&mut *tx)
                .await?;
                report.manifests_deleted =
                    sqlx::query("DELETE FROM manifests WHERE id NOT IN (SELECT id FROM gc_live)")
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                // A dry run rolls back, which drops it too.
                sqlx::query("DROP TABLE gc_live").execute(&mut *tx).await?;
            }
            // The blobs nothing references, removed as one set: a statement per table
            // for all of them rather than statements per blob (offline GC at a million
            // records deletes tens of thousands; per-blob round trips made it minutes).
            sqlx::query(pick!(
                sqlite: "CREATE TEMP TABLE IF NOT EXISTS gc_dead (digest TEXT PRIMARY KEY, size INTEGER NOT NULL)",
                postgres: "CREATE TEMP TABLE gc_dead (digest TEXT PRIMARY KEY, size BIGINT NOT NULL) \
                           ON COMMIT DROP",
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM gc_dead").execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO gc_dead SELECT digest, size FROM blobs b WHERE created_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM dependency_proxy_blobs pb WHERE pb.digest = b.digest)",
            )
            .bind(older_than)
            .execute(&mut *tx)
            .await?;
            // The same steps, in the same order, as `delete_blob` takes for one blob; the
            // unlink triggers queue reviews, which are dropped last.
            sqlx::query(
                "DELETE FROM repository_blobs WHERE digest IN (SELECT digest FROM gc_dead)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM blobs WHERE digest IN (SELECT digest FROM gc_dead)")
                .execute(&mut *tx)
                .await?;
            sqlx::query(concat!(
                "INSERT INTO gc_blob_deletions (digest, size, queued_at) \
                 SELECT digest, size, ",
                pick!(
                    sqlite: "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
                    postgres: "berth_now_ms()"
                ),
                " FROM gc_dead WHERE true ON CONFLICT (digest) DO NOTHING"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM gc_blob_review_queue WHERE digest IN (SELECT digest FROM gc_dead)",
            )
            .execute(&mut *tx)
            .await?;
            let rows = sqlx::query("SELECT digest, size FROM gc_dead ORDER BY digest")
                .fetch_all(&mut *tx)
                .await?;
            report.blobs_deleted = blob_records(rows)?;
            sqlx::query("DROP TABLE gc_dead").execute(&mut *tx).await?;
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(report)
        })
        .await
    }

    async fn all_blobs(&self) -> Result<Vec<BlobRecord>> {
        // Streamed: at a million blobs, the rows fetched all at once took more memory
        // than the records made of them.
        let mut rows =
            sqlx::query("SELECT digest, size FROM blobs ORDER BY digest").fetch(self.reader());
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            out.push(blob_record(r)?);
        }
        Ok(out)
    }

    async fn project_registry_sizes(&self, project_ids: &[i64]) -> Result<HashMap<i64, i64>> {
        // GitLab's measure: unique layers of manifests reachable from live tags, here
        // across every repository of the project; many projects in one statement
        // (a page of 1,000 projects asked one each).
        let mut sizes: HashMap<i64, i64> = project_ids.iter().map(|id| (*id, 0)).collect();
        for ids in project_ids.chunks(SIZES_PER_STATEMENT) {
            let sql = format!(
                "WITH RECURSIVE live(k, id) AS ( \
                    SELECT r.project_id, m.id FROM repositories r \
                    JOIN manifests m ON m.repository_id = r.id \
                    WHERE r.project_id IN ({}) AND {TAGGED} \
                    UNION SELECT live.k, c.child_id FROM manifest_references c \
                    JOIN live ON live.id = c.parent_id) \
                 {LIVE_LAYERS_SIZES}",
                placeholders(ids.len())
            );
            let mut query = sqlx::query_as::<_, (i64, i64)>(&sql);
            for id in ids {
                query = query.bind(id);
            }
            sizes.extend(query.fetch_all(self.reader()).await?);
        }
        Ok(sizes)
    }
}
