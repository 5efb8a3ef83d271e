//! The per-process cache of manifest lookups (`RegistryMeta::manifest`), which lets a
//! manifest GET by tag or digest skip the database.
//!
//! Correctness rests on one generation number per process, not on knowing which
//! writes matter: every write this crate makes — each write transaction when it ends
//! ([`WriteTx`]) and each single statement on the writer ([`Writer`]) — bumps it, and
//! an entry is served only while the generation it was read under is still current.
//! A write path added later goes through `write_tx()` / `writer()` like every other,
//! so it invalidates the cache without knowing the cache exists. The bump comes
//! after the commit, so a lookup that raced with a write is stored under a
//! generation that is already stale.
//!
//! The frequent writes say what they can change instead ([`Scope`], through
//! `write_tx_scoped()` / `writer_scoped()`): a manifest push or a tag deletion bumps
//! only its repository's generation (below), and the bookkeeping of a push (upload
//! sessions, blob links) or of a login bumps nothing, so a node's own pushes no
//! longer empty its cache of every other repository. The triggers that notify the
//! other nodes on PostgreSQL (below) are the check of those declarations: the test
//! `suite::postgres_nodes::each_scoped_write_notifies_what_it_declares` runs each
//! scoped write and compares what it declares with what the triggers report.
//!
//! Writes by other processes are seen as follows:
//!
//! - SQLite (other `berth` commands on the same data dir): every write that may change
//!   content also appends a byte to `<database>-changes`, and an entry is only served
//!   while that file has grown by nothing but this process's own appends since the
//!   entry was read (one `stat` per hit; own appends are covered by the generations
//!   above). A command that wrote has appended before it exits.
//! - PostgreSQL (other nodes, other commands): triggers on `repositories`,
//!   `manifests` and `tags` send `NOTIFY berth_content` (delivered at commit); each
//!   node listens. A change to manifests or tags names the paths of the repositories
//!   it touched, and the node bumps only their generations (below); anything else
//!   (a path changed, a repository came or went, too many repositories for one
//!   notification, a payload it cannot read) bumps the process's generation. While
//!   the listener is not connected the cache is not used at all. The bound on serving
//!   a tag moved elsewhere is therefore the notification's delivery (milliseconds on
//!   a LAN), and [`MAX_AGE`] bounds it whatever happens to the listener.
//!
//! Repository generations: [`BUCKETS`] counters, a repository's path hashed to one of
//! them. An entry is read under its repository's counter as well, so a change made
//! elsewhere to one repository leaves the other repositories' entries (but for the
//! few sharing its counter) in place: with many nodes, each node's cache is emptied
//! by its own writes only, not by everyone's.
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};

use crate::StoredManifest;

/// No entry is served longer than this after it was read from the database.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Manifests larger than this are not cached (the big ones are rare and costly to hold).
const MAX_PAYLOAD: usize = 64 * 1024;
/// Payload bytes held at most; the cache is emptied when it would grow beyond.
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Repository generations kept (each a counter several repositories may share).
const BUCKETS: usize = 4096;
/// The change file is truncated when it reaches this length (a change all the same).
const CHANGES_MAX_LEN: u64 = 1024 * 1024;

struct Entry {
    manifest: StoredManifest,
    stamp: Stamp,
    read_at: Instant,
}

/// What a write can change of what the cache holds, as its call site declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Anything at all: every entry of this process is stale after it (what
    /// `write_tx()` and `writer()` declare).
    Anything,
    /// Manifests and tags of this one repository, and no repository's path: its
    /// entries (and those sharing its counter) are stale after it.
    Repository(String),
    /// No row a manifest lookup reads (`manifests`, `tags`, the paths of
    /// `repositories`) and no repository deleted; a new repository is fine (nothing
    /// of it can be cached yet): upload sessions, blob links, sign-in bookkeeping.
    Nothing,
}

/// What an entry was read under.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    generation: u64,
    /// The generation of the entry's repository (its bucket's).
    repository: u64,
    /// SQLite: how many times the change file was seen changed by someone else.
    changes: u64,
}

/// How this process learns of writes made by others.
enum External {
    /// SQLite: the change file next to the database.
    ChangeFile(ChangeFile),
    /// PostgreSQL: whether this node's `LISTEN berth_content` connection is up.
    Notify {
        listening: AtomicBool,
        started: AtomicBool,
    },
}

pub(crate) struct ContentCache {
    generation: AtomicU64,
    /// Repository generations, [`BUCKETS`] of them (see the module's documentation).
    repositories: Box<[AtomicU64]>,
    external: External,
    entries: Mutex<Entries>,
    /// Lookups answered from the cache (tests only: no shared counter on the hot path).
    #[cfg(test)]
    hits: AtomicU64,
}

/// SQLite's change file, and what this process last knew of its length.
struct ChangeFile {
    path: PathBuf,
    seen: Mutex<Seen>,
}

struct Seen {
    /// The file's length when last looked at ([`MISSING`] when it was not there).
    len: u64,
    /// Bumped whenever the length changed other than by this process's own append.
    epoch: u64,
}

/// [`Seen::len`] of a change file that does not exist.
const MISSING: u64 = u64::MAX;
/// [`Seen::len`] before the file was first looked at (matches no length).
const UNSEEN: u64 = u64::MAX - 1;

impl ChangeFile {
    /// The epoch now: moved on if the file changed since it was last looked at.
    fn epoch(&self) -> Option<u64> {
        let len = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            // Not there yet: nobody has written since it was last truncated away.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MISSING,
            Err(_) => return None,
        };
        let mut seen = self.seen.lock().ok()?;
        if seen.len != len {
            seen.len = len;
            seen.epoch += 1;
        }
        Some(seen.epoch)
    }

    /// Append this process's mark. When the file then holds exactly one byte more
    /// than it did when last looked at, the change was this process's own (which its
    /// generations already account for): the epoch stays. Anything else (someone
    /// else appended or truncated meanwhile, or the file was never looked at) moves
    /// the epoch on.
    fn append(&self) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(b".")?;
        let len = f.metadata()?.len();
        let truncated = len >= CHANGES_MAX_LEN;
        if truncated {
            f.set_len(0)?;
        }
        let Ok(mut seen) = self.seen.lock() else {
            return Ok(());
        };
        let before = if seen.len == MISSING { 0 } else { seen.len };
        if seen.len == UNSEEN || len != before + 1 || truncated {
            seen.epoch += 1;
        }
        seen.len = if truncated { 0 } else { len };
        Ok(())
    }
}

#[derive(Default)]
struct Entries {
    /// Keyed by `repository\ntag` or `repository\ndigest` (no name holds a newline).
    map: HashMap<String, Entry>,
    bytes: usize,
}

impl std::fmt::Debug for ContentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentCache")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ContentCache {
    /// For SQLite at `database` (the change file is `<database>-changes`).
    pub(crate) fn sqlite(database: &std::path::Path) -> Arc<Self> {
        let mut changes = database.as_os_str().to_owned();
        changes.push("-changes");
        Arc::new(ContentCache::with(External::ChangeFile(ChangeFile {
            path: PathBuf::from(changes),
            seen: Mutex::new(Seen {
                len: UNSEEN,
                epoch: 0,
            }),
        })))
    }

    /// For PostgreSQL: unusable until [`ContentCache::listening`] says otherwise.
    pub(crate) fn postgres() -> Arc<Self> {
        Arc::new(ContentCache::with(External::Notify {
            listening: AtomicBool::new(false),
            started: AtomicBool::new(false),
        }))
    }

    fn with(external: External) -> Self {
        ContentCache {
            generation: AtomicU64::new(0),
            repositories: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            external,
            entries: Mutex::default(),
            #[cfg(test)]
            hits: AtomicU64::new(0),
        }
    }

    fn bucket(&self, repository: &str) -> &AtomicU64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        repository.hash(&mut h);
        &self.repositories[(h.finish() % BUCKETS as u64) as usize]
    }

    /// The current stamp for an entry of `repository`, or `None` when the cache may
    /// not be used now.
    pub(crate) fn stamp(&self, repository: &str) -> Option<Stamp> {
        let generation = self.generation.load(Ordering::Acquire);
        let repository = self.bucket(repository).load(Ordering::Acquire);
        let changes = match &self.external {
            External::ChangeFile(file) => file.epoch()?,
            External::Notify { listening, .. } => {
                if !listening.load(Ordering::Acquire) {
                    return None;
                }
                0
            }
        };
        Some(Stamp {
            generation,
            repository,
            changes,
        })
    }

    /// PostgreSQL: whether the listener must still be started (true once).
    pub(crate) fn needs_listener(&self) -> bool {
        match &self.external {
            External::Notify { started, .. } => !started.swap(true, Ordering::AcqRel),
            External::ChangeFile(_) => false,
        }
    }

    /// PostgreSQL: the listener connected (`true`) or lost its connection (`false`).
    /// Either way anything may have changed unseen, so the generation moves on.
    pub(crate) fn listening(&self, up: bool) {
        if let External::Notify { listening, .. } = &self.external {
            if !up {
                listening.store(false, Ordering::Release);
            }
            self.generation.fetch_add(1, Ordering::AcqRel);
            if up {
                listening.store(true, Ordering::Release);
            }
        }
    }

    /// A notification says the content changed elsewhere: in the repositories whose
    /// paths `payload` lists, one a line, or, when it is empty, anywhere.
    pub(crate) fn changed_elsewhere(&self, payload: &str) {
        if payload.is_empty() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        for repository in payload.split('\n') {
            self.bucket(repository).fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Lookups answered from the cache so far.
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// This process wrote (committed, or gave up on) something within `scope`: the
    /// entries it may have changed are stale.
    fn wrote(&self, scope: &Scope) {
        match scope {
            Scope::Nothing => return,
            Scope::Anything => {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            Scope::Repository(path) => {
                self.bucket(path).fetch_add(1, Ordering::AcqRel);
            }
        }
        if let External::ChangeFile(file) = &self.external {
            // Other processes learn of it by the file's length. If the file cannot be
            // written they cannot: their cache then waits for MAX_AGE, which is why the
            // failure is logged.
            if let Err(e) = file.append() {
                tracing::warn!(
                    "could not record a metadata change in {}: {e}",
                    file.path.display()
                );
            }
        }
    }

    pub(crate) fn get(&self, repository: &str, key: &str) -> Option<StoredManifest> {
        let stamp = self.stamp(repository)?;
        let entries = self.entries.lock().ok()?;
        let e = entries.map.get(&entry_key(repository, key))?;
        let hit = (e.stamp == stamp && e.read_at.elapsed() < MAX_AGE).then(|| e.manifest.clone());
        #[cfg(test)]
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub(crate) fn put(&self, repository: &str, key: &str, stamp: Stamp, manifest: &StoredManifest) {
        let size = manifest.payload.len() + repository.len() + key.len();
        if manifest.payload.len() > MAX_PAYLOAD {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.bytes + size > MAX_BYTES {
            entries.map.clear();
            entries.bytes = 0;
        }
        let old = entries.map.insert(
            entry_key(repository, key),
            Entry {
                manifest: manifest.clone(),
                stamp,
                read_at: Instant::now(),
            },
        );
        entries.bytes += size;
        if let Some(old) = old {
            entries.bytes = entries
                .bytes
                .saturating_sub(old.manifest.payload.len() + repository.len() + key.len());
        }
    }

    fn bump_on_drop(&self, scope: Scope) -> Bump<'_> {
        Bump { cache: self, scope }
    }
}

fn entry_key(repository: &str, key: &str) -> String {
    let mut k = String::with_capacity(repository.len() + key.len() + 1);
    k.push_str(repository);
    k.push('\n');
    k.push_str(key);
    k
}

/// Bumps the generations of its scope when dropped: after the statement or
/// transaction it accompanies has finished (or was abandoned, which is harmless to
/// count).
struct Bump<'a> {
    cache: &'a ContentCache,
    scope: Scope,
}

impl Drop for Bump<'_> {
    fn drop(&mut self) {
        self.cache.wrote(&self.scope);
    }
}

/// A write transaction; committing it (or rolling it back) invalidates the cache when
/// done. Dropped without either, it rolls back and changed nothing anyone could see,
/// so there is nothing to invalidate. It dereferences to the connection, so `&mut *tx` is an executor as with a plain
/// `sqlx::Transaction`.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    cache: Arc<ContentCache>,
    scope: Scope,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    pub(crate) fn new(
        tx: sqlx::Transaction<'static, DB>,
        cache: Arc<ContentCache>,
        scope: Scope,
    ) -> Self {
        WriteTx { tx, cache, scope }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, cache, scope } = self;
        let _bump = cache.bump_on_drop(scope);
        tx.commit().await
    }

    #[allow(dead_code)] // not every backend's copy of `ops/` rolls back explicitly
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, cache, scope } = self;
        let _bump = cache.bump_on_drop(scope);
        tx.rollback().await
    }
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// The writer pool as an executor whose statements invalidate the cache (within its
/// scope) when they have run (single statements commit on their own).
pub(crate) struct Writer<'c, DB: sqlx::Database> {
    pub(crate) pool: &'c sqlx::Pool<DB>,
    pub(crate) cache: &'c ContentCache,
    pub(crate) scope: Scope,
}

impl<DB: sqlx::Database> std::fmt::Debug for Writer<'_, DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<'c, DB: sqlx::Database> sqlx::Executor<'c> for Writer<'c, DB>
where
    &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<sqlx::Either<DB::QueryResult, DB::Row>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, DB>,
    {
        let bump = self.cache.bump_on_drop(self.scope);
        self.pool
            .fetch_many(query)
            .map(move |step| {
                let _ = &bump;
                step
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, DB>,
    {
        let bump = self.cache.bump_on_drop(self.scope);
        let run = self.pool.fetch_optional(query);
        async move {
            let row = run.await;
            drop(bump);
            row
        }
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<DB>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.pool.describe(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str) -> StoredManifest {
        StoredManifest {
            digest: berth_oci::Digest::sha256_of(text.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            payload: bytes::Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    /// A cache as a listening PostgreSQL node has it, holding `p/a:t` and `p/b:t`.
    fn holding_two() -> Arc<ContentCache> {
        let cache = ContentCache::postgres();
        cache.listening(true);
        for repository in ["p/a", "p/b"] {
            let stamp = cache.stamp(repository).expect("listening");
            cache.put(repository, "t", stamp, &stored(repository));
        }
        assert!(cache.get("p/a", "t").is_some() && cache.get("p/b", "t").is_some());
        cache
    }

    #[test]
    fn a_change_elsewhere_to_one_repository_leaves_the_others_cached() {
        let cache = holding_two();
        assert!(
            !std::ptr::eq(cache.bucket("p/a"), cache.bucket("p/b")),
            "the two test repositories share a counter; pick other names"
        );
        cache.changed_elsewhere("p/a");
        assert!(cache.get("p/a", "t").is_none(), "p/a changed");
        assert_eq!(cache.get("p/b", "t").map(|m| m.payload), Some("p/b".into()));
        // Several paths, one a line.
        let cache = holding_two();
        cache.changed_elsewhere("p/x\np/b");
        assert!(cache.get("p/b", "t").is_none(), "p/b changed");
        assert!(cache.get("p/a", "t").is_some());
    }

    #[test]
    fn an_empty_notification_or_a_local_write_empties_everything() {
        let cache = holding_two();
        cache.changed_elsewhere("");
        assert!(cache.get("p/a", "t").is_none() && cache.get("p/b", "t").is_none());
        let cache = holding_two();
        cache.wrote(&Scope::Anything);
        assert!(cache.get("p/a", "t").is_none() && cache.get("p/b", "t").is_none());
    }

    #[test]
    fn a_scoped_local_write_leaves_the_other_repositories_cached() {
        let cache = holding_two();
        cache.wrote(&Scope::Nothing);
        assert!(cache.get("p/a", "t").is_some() && cache.get("p/b", "t").is_some());
        cache.wrote(&Scope::Repository("p/a".into()));
        assert!(cache.get("p/a", "t").is_none(), "p/a written");
        assert!(cache.get("p/b", "t").is_some());
    }

    /// Two processes on one SQLite database: a process's own writes do not make it
    /// drop what they left alone, and any content write by the other does.
    #[test]
    fn sqlite_processes_see_each_others_writes_but_not_their_own_twice() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("m.db");
        let (one, other) = (
            ContentCache::sqlite(&database),
            ContentCache::sqlite(&database),
        );
        let changes = dir.path().join("m.db-changes");
        let hold = |cache: &ContentCache| {
            for repository in ["p/a", "p/b"] {
                let stamp = cache.stamp(repository).unwrap();
                cache.put(repository, "t", stamp, &stored(repository));
            }
        };
        let held = |cache: &ContentCache, repository| cache.get(repository, "t").is_some();
        hold(&one);
        assert!(held(&one, "p/a") && held(&one, "p/b"));

        // Its own write to p/a, the first ever (the change file is created).
        one.wrote(&Scope::Repository("p/a".into()));
        assert_eq!(std::fs::metadata(&changes).unwrap().len(), 1);
        assert!(!held(&one, "p/a") && held(&one, "p/b"));
        // Bookkeeping by the other process is not recorded at all.
        other.wrote(&Scope::Nothing);
        assert_eq!(std::fs::metadata(&changes).unwrap().len(), 1);
        assert!(held(&one, "p/b"));
        // The other process changes content: everything of this one is stale.
        other.wrote(&Scope::Repository("p/x".into()));
        assert!(!held(&one, "p/b"));

        // Appends by both between two looks: this process cannot tell its own from
        // the other's, so it drops everything.
        hold(&one);
        other.wrote(&Scope::Repository("p/x".into()));
        one.wrote(&Scope::Repository("p/a".into()));
        assert!(!held(&one, "p/b"));
        // The file truncated at its limit by this process: everything goes too.
        hold(&one);
        std::fs::write(&changes, vec![b'.'; CHANGES_MAX_LEN as usize - 1]).unwrap();
        assert!(!held(&one, "p/b"), "the other process's write");
        hold(&one);
        one.wrote(&Scope::Repository("p/a".into()));
        assert_eq!(std::fs::metadata(&changes).unwrap().len(), 0);
        assert!(!held(&one, "p/b"));
        // And then its own appends are its own again.
        hold(&one);
        one.wrote(&Scope::Repository("p/a".into()));
        assert!(held(&one, "p/b"));
    }

    #[test]
    fn a_lookup_that_raced_a_change_elsewhere_is_not_served() {
        // The stamp is taken before the database is read; a notification that
        // arrives before the answer is stored leaves the stored entry stale.
        let cache = ContentCache::postgres();
        cache.listening(true);
        let stamp = cache.stamp("p/a").unwrap();
        cache.changed_elsewhere("p/a");
        cache.put("p/a", "t", stamp, &stored("old"));
        assert!(cache.get("p/a", "t").is_none());
        let hits = cache.hits();
        let stamp = cache.stamp("p/a").unwrap();
        cache.put("p/a", "t", stamp, &stored("new"));
        assert!(cache.get("p/a", "t").is_some());
        assert_eq!(cache.hits(), hits + 1);
    }
}
