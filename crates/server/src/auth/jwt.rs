//! Registry bearer tokens: ES256 JWTs in the shape GitLab and distribution use
//! (`iss`, `aud`, `sub`, `access` claims; a libtrust-style `kid`). The signing key is
//! generated on first start and kept in the metadata database, so every node of an
//! installation signs and verifies with the same key.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One entry of the `access` claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// Who the token was issued to, so the registry can filter listings for them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenUser {
    /// `user`, `personal_access_token`, `deploy_token`, `build` or `anonymous`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<ResourceAccess>,
    pub auth_type: String,
    pub user: TokenUser,
}

impl Claims {
    /// Actions granted on a repository path.
    pub fn actions_on<'a>(&'a self, repository: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.access
            .iter()
            .filter(move |a| a.kind == "repository" && a.name == repository)
            .flat_map(|a| a.actions.iter().map(String::as_str))
    }

    pub fn has_catalog(&self) -> bool {
        self.access.iter().any(|a| {
            a.kind == "registry" && a.name == "catalog" && a.actions.iter().any(|x| x == "*")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the signing key is not a valid P-256 PKCS#8 PEM: {0}")]
    Invalid(String),
}

/// Verified tokens are remembered until they expire, so a client that reuses its
/// token (all of them do) costs one signature check, not one per request.
const VERIFIED_CACHE_MAX: usize = 10_000;

/// Clock skew tolerated on `exp` and `nbf`, as distribution allows.
const LEEWAY_SECS: i64 = 60;

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    service: String,
    verified: Mutex<HashMap<String, Claims>>,
}

/// libtrust key id: base32 of the first 30 bytes of SHA-256 over the DER
/// SubjectPublicKeyInfo, in groups of four separated by `:`.
fn libtrust_kid(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let bytes = &hash[..30];
    let mut out = String::with_capacity(48);
    // 30 bytes = 240 bits = 48 base32 characters, no padding needed.
    let mut buffer: u64 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | b as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

impl Signer {
    /// A new random signing key, as PKCS#8 PEM.
    pub fn generate_pem() -> Result<String, KeyError> {
        let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(pem.to_string())
    }

    /// A signer with the P-256 key in `pem` (PKCS#8).
    pub fn from_pem(pem: &str, issuer: &str, service: &str) -> Result<Signer, KeyError> {
        let secret =
            p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Invalid(e.to_string()))?;
        Signer::from_secret(&secret, issuer, service)
    }

    fn from_secret(
        secret: &p256::SecretKey,
        issuer: &str,
        service: &str,
    ) -> Result<Signer, KeyError> {
        let invalid = |e: &dyn std::fmt::Display| KeyError::Invalid(e.to_string());
        let private_pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| invalid(&e))?;
        let public = secret.public_key();
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| invalid(&e))?;
        let spki = public.to_public_key_der().map_err(|e| invalid(&e))?;
        Ok(Signer {
            encoding: EncodingKey::from_ec_pem(private_pem.as_bytes()).map_err(|e| invalid(&e))?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(|e| invalid(&e))?,
            kid: libtrust_kid(spki.as_bytes()),
            issuer: issuer.to_string(),
            service: service.to_string(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Check signature, algorithm, issuer, audience and lifetime (60 s leeway, as
    /// distribution allows). `now` is Unix seconds.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        if let Ok(cache) = self.verified.lock() {
            if let Some(c) = cache.get(token) {
                return (c.exp + LEEWAY_SECS >= now && c.nbf - LEEWAY_SECS <= now)
                    .then(|| c.clone());
            }
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        // Lifetime is checked below against the `now` we were given.
        v.validate_exp = false;
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).ok()?;
        if data.header.kid.as_deref() != Some(self.kid.as_str()) {
            return None;
        }
        let c = &data.claims;
        if c.exp + LEEWAY_SECS < now || c.nbf - LEEWAY_SECS > now {
            return None;
        }
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.retain(|_, c| c.exp + LEEWAY_SECS >= now);
                if cache.len() >= VERIFIED_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_string(), data.claims.clone());
        }
        Some(data.claims)
    }

    /// Verify a token as [`Signer::verify`] does, except that it may have expired up
    /// to `max_age` seconds ago: for upload sessions, which outlive tokens (the
    /// caller re-checks the holder's permission).
    pub fn verify_expired_within(&self, token: &str, now: i64, max_age: i64) -> Option<Claims> {
        if let Some(c) = self.verify(token, now) {
            return Some(c);
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        v.validate_exp = false;
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).ok()?;
        if data.header.kid.as_deref() != Some(self.kid.as_str()) {
            return None;
        }
        let c = data.claims;
        (c.exp.saturating_add(max_age) >= now && c.nbf.saturating_sub(LEEWAY_SECS) <= now)
            .then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64, aud: &str) -> Claims {
        Claims {
            iss: "berth".into(),
            sub: Some("alice".into()),
            aud: aud.into(),
            exp: now + 300,
            nbf: now - 5,
            iat: now,
            jti: "x".into(),
            access: vec![ResourceAccess {
                kind: "repository".into(),
                name: "g/p".into(),
                actions: vec!["pull".into()],
                meta: None,
            }],
            auth_type: "gitlab_or_ldap".into(),
            user: TokenUser {
                kind: "user".into(),
                user_id: Some(1),
                token_id: None,
            },
        }
    }

    #[test]
    fn sign_verify_and_refuse_tampering() {
        let pem = Signer::generate_pem().unwrap();
        let s = Signer::from_pem(&pem, "berth", "container_registry").unwrap();
        let again = Signer::from_pem(&pem, "berth", "container_registry").unwrap();
        assert_eq!(s.kid(), again.kid());
        assert_eq!(s.kid().len(), 48 + 11);
        let now = 1_000_000;
        let t = s.sign(&claims(now, "container_registry")).unwrap();
        let c = again.verify(&t, now).unwrap();
        assert_eq!(c.actions_on("g/p").collect::<Vec<_>>(), vec!["pull"]);
        // expired (beyond leeway), whether cached or not
        assert!(s.verify(&t, now + 300 + 61).is_none());
        assert!(again.verify(&t, now + 300 + 61).is_none());
        // not yet valid
        assert!(s.verify(&t, now - 5 - 61).is_none());
        // wrong audience
        let wrong = s.sign(&claims(now, "other")).unwrap();
        assert!(s.verify(&wrong, now).is_none());
        // another key
        let other = Signer::from_pem(
            &Signer::generate_pem().unwrap(),
            "berth",
            "container_registry",
        )
        .unwrap();
        assert!(other.verify(&t, now).is_none());
        // tampered payload
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = parts[1].replace('A', "B");
        assert!(s.verify(&parts.join("."), now).is_none());
        // alg none
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            t.split('.').nth(1).unwrap()
        );
        assert!(s.verify(&none, now).is_none());
    }

    #[test]
    fn a_key_that_is_not_pkcs8_is_refused() {
        assert!(matches!(
            Signer::from_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "berth",
                "x"
            ),
            Err(KeyError::Invalid(_))
        ));
    }
}
