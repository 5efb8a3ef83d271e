//! Secrets: generation with GitLab's prefixes, SHA-256 digests for tokens (they are
//! long and random, so a fast hash is enough), argon2 for passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

pub const PAT_PREFIX: &str = "glpat-";
pub const DEPLOY_PREFIX: &str = "gldt-";
pub const JOB_PREFIX: &str = "glcbt-";

/// A hash of a password nobody has, checked when the username is unknown so that
/// unknown and known users take the same time.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4mS5b6WhZ0hb4uNwL8h1hMbE6j3Xoj2K2q9R0J0dXzE";

/// A new random secret: `prefix` followed by 20 random letters and digits.
pub fn generate(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 20)
    )
}

/// A random password for the initial administrator.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

/// How tokens are stored and looked up.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Password checks at once. Each argon2 check takes ~19 MiB and tens of milliseconds of
/// CPU, so they are bounded to keep memory flat under a burst of logins.
const CONCURRENT_CHECKS: usize = 2;
/// How long a successful check is remembered.
const REMEMBER_MS: i64 = 5 * 60 * 1000;
const REMEMBER_MAX: usize = 10_000;

/// Checks passwords off the async runtime, a few at a time, and remembers recent
/// successes so a client that logs in for every repository (docker does) pays the
/// argon2 cost once. What is remembered is a digest of the stored hash and the
/// password, so a changed password (new stored hash) is never matched.
pub struct PasswordChecker {
    permits: tokio::sync::Semaphore,
    recent: std::sync::Mutex<std::collections::HashMap<[u8; 32], i64>>,
}

impl Default for PasswordChecker {
    fn default() -> Self {
        PasswordChecker {
            permits: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
            recent: Default::default(),
        }
    }
}

impl PasswordChecker {
    fn key(password: &str, hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(hash.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    pub async fn verify(&self, password: &str, hash: &str, now: i64) -> bool {
        let key = Self::key(password, hash);
        if let Ok(recent) = self.recent.lock() {
            if recent.get(&key).is_some_and(|until| *until > now) {
                return true;
            }
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let (p, h) = (password.to_string(), hash.to_string());
        let ok = tokio::task::spawn_blocking(move || verify_password(&p, &h))
            .await
            .unwrap_or(false);
        if ok {
            if let Ok(mut recent) = self.recent.lock() {
                if recent.len() >= REMEMBER_MAX {
                    recent.retain(|_, until| *until > now);
                    if recent.len() >= REMEMBER_MAX {
                        recent.clear();
                    }
                }
                recent.insert(key, now + REMEMBER_MS);
            }
        }
        ok
    }
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checker_remembers_only_what_matches() {
        let c = PasswordChecker::default();
        let h = hash_password("s3cret").unwrap();
        assert!(c.verify("s3cret", &h, 0).await);
        assert!(c.verify("s3cret", &h, 1).await);
        assert!(!c.verify("wrong", &h, 1).await);
        // A new hash (password changed) is checked afresh.
        let h2 = hash_password("other").unwrap();
        assert!(!c.verify("s3cret", &h2, 1).await);
        // Expired memory falls back to a real check, which still succeeds.
        assert!(c.verify("s3cret", &h, REMEMBER_MS + 10).await);
    }

    #[test]
    fn passwords_and_tokens() {
        let h = hash_password("s3cret").unwrap();
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret", DUMMY_HASH));
        let t = generate(PAT_PREFIX);
        assert!(t.starts_with("glpat-") && t.len() == 26);
        assert_ne!(generate(PAT_PREFIX), t);
        assert_eq!(digest("a").len(), 64);
    }
}
