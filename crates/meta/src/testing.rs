//! Throwaway PostgreSQL databases for tests (this crate's suite and the end-to-end
//! tests): each test gets a fresh database on the server named by
//! `BERTH_TEST_POSTGRES_URL` (default: user `postgres` on 127.0.0.1:5432), dropped
//! soon after the handle goes. Fresh databases are copies of a template that holds the
//! current schema (`berth_test_tmpl_<fingerprint of the migrations>`, made once per
//! server and kept), so a test does not run every migration again; a server started
//! on one finds its schema up to date.
//!
//! Without a reachable server the PostgreSQL tests are skipped, loudly, unless
//! `BERTH_TEST_REQUIRE_POSTGRES=1` (set in CI), which makes them fail instead.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists until this is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

/// Whether PostgreSQL tests must run (`BERTH_TEST_REQUIRE_POSTGRES=1`).
pub fn postgres_required() -> bool {
    std::env::var("BERTH_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

fn admin_url() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into())
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "berth_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn admin_connection(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    tokio::time::timeout(Duration::from_secs(10), opts.connect())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// The template database with the current schema, made if missing. Test processes
/// may race to make it: an advisory lock serialises them, and it is built under
/// another name and renamed, so no copy is ever taken of a half-migrated one.
async fn schema_template(
    conn: &mut sqlx::PgConnection,
    admin_url: &str,
) -> Result<String, sqlx::Error> {
    // FNV-1a over the migrations' versions and checksums: a schema change makes a
    // new template.
    let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
    for m in crate::postgres::MIGRATOR.iter() {
        for b in m.version.to_le_bytes().iter().chain(m.checksum.iter()) {
            fingerprint = (fingerprint ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let name = format!("berth_test_tmpl_{fingerprint:016x}");
    const TEMPLATE_LOCK: i64 = 0x6265_7274_746d_706c; // "berttmpl"
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut *conn)
        .await?;
    let made = async {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_some() {
            return Ok(());
        }
        let building = format!("{name}_{}", std::process::id());
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut *conn)
            .await?;
        // Bytewise collation whatever the server's locale (the schema asks for it per
        // column too; this keeps ad-hoc queries in tests consistent).
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {building} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .execute(&mut *conn)
        .await?;
        let mut schema = admin_connection(&with_database(admin_url, &building)).await?;
        let migrated = crate::postgres::MIGRATOR.run(&mut schema).await;
        let _ = schema.close().await;
        migrated.map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        sqlx::raw_sql(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut *conn)
            .await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut *conn)
        .await;
    made.map(|()| name)
}

impl TestDatabase {
    /// A fresh, empty database, or `None` (after saying so on stderr) when
    /// PostgreSQL is unreachable and not required. `what` names the test.
    ///
    /// # Panics
    /// When PostgreSQL is required but unreachable, or refuses to create a database.
    pub async fn create(what: &str) -> Option<TestDatabase> {
        let admin_url = admin_url();
        let mut conn = match admin_connection(&admin_url).await {
            Ok(c) => c,
            Err(e) if !postgres_required() => {
                eprintln!(
                    "!!! SKIPPED (PostgreSQL): {what}: no PostgreSQL at {admin_url} ({e}); \
                     set BERTH_TEST_REQUIRE_POSTGRES=1 to make this a failure"
                );
                return None;
            }
            Err(e) => panic!(
                "{what}: PostgreSQL is required (BERTH_TEST_REQUIRE_POSTGRES=1) but {admin_url} \
                 is unreachable: {e}"
            ),
        };
        sweep_leftovers(&mut conn, &admin_url).await;
        let template = schema_template(&mut conn, &admin_url)
            .await
            .unwrap_or_else(|e| panic!("{what}: preparing the schema template: {e}"));
        let name = unique_name();
        sqlx::raw_sql(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{what}: creating database {name}: {e}"));
        // A test database need not survive a crash of the server: commits do not wait
        // for the WAL to reach the disk (every other guarantee stays).
        sqlx::raw_sql(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{what}: configuring database {name}: {e}"));
        let _ = conn.close().await;
        Some(TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// A `BERTH_DATABASE_URL` for this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Dropping a database makes PostgreSQL checkpoint (seconds on a busy
        // machine), so it is left to a background thread and the test goes on.
        // What a process could not drop before it exited is swept by the next one.
        dropper().send((self.admin_url.clone(), self.name.clone()));
    }
}

/// Drops databases one after the other on a thread of its own (with its own
/// runtime, so it works whether `drop` runs inside a runtime or not).
struct Dropper(std::sync::Mutex<std::sync::mpsc::Sender<(String, String)>>);

impl Dropper {
    fn send(&self, what: (String, String)) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(what);
        }
    }
}

fn dropper() -> &'static Dropper {
    static DROPPER: std::sync::OnceLock<Dropper> = std::sync::OnceLock::new();
    DROPPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            for (admin_url, name) in rx {
                let dropped = rt.block_on(async {
                    let mut conn = admin_connection(&admin_url).await?;
                    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                });
                if let Err(e) = dropped {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
            }
        });
        Dropper(std::sync::Mutex::new(tx))
    })
}

/// Once per process: queue for dropping the test databases of test processes that
/// have exited (their names carry the process id). Only where `/proc` tells.
async fn sweep_leftovers(conn: &mut sqlx::PgConnection, admin_url: &str) {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::Relaxed) || !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'berth\\_test\\_%'")
            .fetch_all(conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix("berth_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                dropper().send((admin_url.to_string(), name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
