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
