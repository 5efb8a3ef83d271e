//! Throwaway PostgreSQL databases for tests (this crate's suite and the end-to-end
//! tests): each test gets a fresh database on the server named by
//! `BERTH_TEST_POSTGRES_URL` (default: user `postgres` on 127.0.0.1:5432), dropped
//! when the handle goes.
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
        let name = unique_name();
        // Bytewise collation whatever the server's locale (the schema asks for it per
        // column too; this keeps ad-hoc queries in tests consistent).
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
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
        // Drop may run inside or outside a runtime; a thread with its own runtime
        // works in both. FORCE ends connections a pool or a server still holds.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = admin_connection(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = done.map_err(|_| "panicked".to_string()) {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
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
