//! Registry bearer tokens: ES256 JWTs in the shape GitLab and distribution use
//! (`iss`, `aud`, `sub`, `access` claims; a libtrust-style `kid`). The signing key is
//! generated on first start and kept in the metadata database, so every node of an
//! installation signs and verifies with the same key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

    /// Whether `now` (Unix seconds) is within the token's lifetime, with the leeway.
    /// Saturating: `exp` and `nbf` are whatever the token says.
    fn current(&self, now: i64) -> bool {
        self.exp.saturating_add(LEEWAY_SECS) >= now && self.nbf.saturating_sub(LEEWAY_SECS) <= now
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

/// Clock skew tolerated on `exp` and `nbf`, as distribution allows. It also covers
/// clients' own rule: docker and containers/image take a token's `expires_in` as at
/// least 60 s and keep using it that long, so a shorter `token_expiry` must not
/// refuse them sooner.
const LEEWAY_SECS: i64 = 60;

pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    service: String,
    verified: Mutex<HashMap<String, Arc<Claims>>>,
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
    pub fn verify(&self, token: &str, now: i64) -> Option<Arc<Claims>> {
        if let Ok(cache) = self.verified.lock() {
            if let Some(c) = cache.get(token) {
                return c.current(now).then(|| c.clone());
            }
        }
        let claims = Arc::new(self.decode(token)?);
        if !claims.current(now) {
            return None;
        }
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.retain(|_, c| c.exp.saturating_add(LEEWAY_SECS) >= now);
                if cache.len() >= VERIFIED_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_string(), claims.clone());
        }
        Some(claims)
    }

    /// The claims of a token signed by this key for this issuer and audience,
    /// whatever its lifetime says (the callers check it).
    fn decode(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        v.validate_exp = false;
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).ok()?;
        (data.header.kid.as_deref() == Some(self.kid.as_str())).then_some(data.claims)
    }

    /// Verify a token as [`Signer::verify`] does, except that it may have expired up
    /// to `max_age` seconds ago: for upload sessions, which outlive tokens (the
    /// caller re-checks the holder's permission).
    pub fn verify_expired_within(
        &self,
        token: &str,
        now: i64,
        max_age: i64,
    ) -> Option<Arc<Claims>> {
        if let Some(c) = self.verify(token, now) {
            return Some(c);
        }
        let c = self.decode(token)?;
        (c.exp.saturating_add(max_age) >= now && c.nbf.saturating_sub(LEEWAY_SECS) <= now)
            .then(|| Arc::new(c))
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

    mod fuzz {
        use std::sync::LazyLock;

        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine;
        use proptest::prelude::*;

        use super::super::*;
        use super::claims;
        use crate::registry::fuzz::{cases, check, check_n};

        const NOW: i64 = 1_800_000_000;

        /// One key for every case: generating one costs more than a check.
        static KEY: LazyLock<(Signer, String)> = LazyLock::new(|| {
            let pem = Signer::generate_pem().unwrap();
            let public = p256::SecretKey::from_pkcs8_pem(&pem)
                .unwrap()
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap();
            (
                Signer::from_pem(&pem, "berth", "container_registry").unwrap(),
                public,
            )
        });

        fn valid_token() -> String {
            KEY.0.sign(&claims(NOW, "container_registry")).unwrap()
        }

        /// Tokens a hostile or broken client may send: garbage, a valid token cut
        /// short or with a byte changed, a header naming another algorithm (with the
        /// public key as an HMAC secret: the classic confusion), huge headers.
        fn hostile_token() -> impl Strategy<Value = String> {
            let valid = valid_token();
            let (a, b) = (valid.clone(), valid.clone());
            let part = "[A-Za-z0-9_=+/-]{0,60}";
            prop_oneof![
                2 => any::<String>(),
                2 => (part, part, part).prop_map(|(x, y, z)| format!("{x}.{y}.{z}")),
                2 => (0..valid.len()).prop_map(move |n| a[..n].to_string()),
                2 => (0..valid.len(), any::<u8>()).prop_map(move |(i, c)| {
                    let mut bytes = b.clone().into_bytes();
                    bytes[i] = b"ABCxyz019_-."[c as usize % 12];
                    String::from_utf8(bytes).unwrap()
                }),
                2 => (
                    prop::sample::select(vec![
                        "none", "None", "HS256", "HS384", "HS512", "RS256", "ES384", "PS256",
                        "EdDSA", "es256", "", "ES256",
                    ]),
                    any::<bool>(),
                    "[A-Za-z0-9_-]{0,90}",
                )
                    .prop_map(|(alg, hmac, sig)| {
                        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": KEY.0.kid()});
                        let payload = serde_json::to_vec(&claims(NOW, "container_registry")).unwrap();
                        let signing_input = format!(
                            "{}.{}",
                            B64.encode(serde_json::to_vec(&header).unwrap()),
                            B64.encode(payload)
                        );
                        let sig = if hmac {
                            use sha2::Sha256;
                            // HMAC-SHA256 keyed with the public key's PEM.
                            let key = KEY.1.as_bytes();
                            let mut k = [0u8; 64];
                            k[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
                            if key.len() > 64 {
                                k[..32].copy_from_slice(&Sha256::digest(key));
                                k[32..].fill(0);
                            }
                            let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
                            let inner = Sha256::digest([pad(0x36), signing_input.as_bytes().to_vec()].concat());
                            let outer = Sha256::digest([pad(0x5c), inner.to_vec()].concat());
                            B64.encode(outer)
                        } else {
                            sig
                        };
                        format!("{signing_input}.{sig}")
                    }),
                1 => (0usize..200_000, any::<bool>()).prop_map(|(n, many)| {
                    let header = if many {
                        let fields: serde_json::Map<String, serde_json::Value> = (0..n / 20)
                            .map(|i| (format!("f{i}"), serde_json::json!(i)))
                            .collect();
                        serde_json::Value::Object(fields)
                    } else {
                        serde_json::json!({"alg": "ES256", "kid": "K".repeat(n)})
                    };
                    let v = valid_token();
                    let rest = v.split_once('.').unwrap().1.to_string();
                    format!("{}.{rest}", B64.encode(serde_json::to_vec(&header).unwrap()))
                }),
            ]
        }

        #[test]
        fn fuzz_hostile_tokens_are_refused() {
            check("hostile JWT", hostile_token(), |t| {
                let valid = valid_token();
                let verified = KEY.0.verify(&t, NOW);
                // ECDSA signatures are not unique, so only the token as signed
                // is known to verify; everything else here must not.
                if t != valid {
                    prop_assert!(verified.is_none(), "accepted {}", t);
                }
                Ok(())
            });
        }

        #[test]
        fn fuzz_lifetimes_never_overflow() {
            let t = prop_oneof![any::<i64>(), (NOW - 1000)..(NOW + 1000)];
            let few = (cases() / 4).max(64);
            check_n(
                "JWT lifetime",
                few,
                (t.clone(), t.clone(), t),
                |(exp, nbf, now)| {
                    let mut c = claims(NOW, "container_registry");
                    c.exp = exp;
                    c.nbf = nbf;
                    let token = KEY.0.sign(&c).unwrap();
                    // jsonwebtoken reads `exp` and `nbf` as unsigned: a negative one is
                    // a malformed token (we never sign one).
                    let reference = exp >= 0
                        && nbf >= 0
                        && i128::from(exp) + 60 >= i128::from(now)
                        && i128::from(nbf) - 60 <= i128::from(now);
                    // Twice: the second answer comes from the cache of verified tokens.
                    for _ in 0..2 {
                        let got = KEY.0.verify(&token, now);
                        prop_assert_eq!(got.is_some(), reference);
                        if let Some(g) = got {
                            prop_assert_eq!(
                                serde_json::to_value(&g).unwrap(),
                                serde_json::to_value(&c).unwrap()
                            );
                        }
                    }
                    Ok(())
                },
            );
        }
    }

    #[test]
    fn a_token_with_extreme_times_is_checked_without_overflow() {
        // `fuzz_lifetimes_never_overflow` catches this: exp + leeway overflowed i64.
        let s = Signer::from_pem(
            &Signer::generate_pem().unwrap(),
            "berth",
            "container_registry",
        )
        .unwrap();
        let mut c = claims(0, "container_registry");
        c.exp = i64::MAX;
        c.nbf = 0;
        let t = s.sign(&c).unwrap();
        assert!(s.verify(&t, 0).is_some());
        assert!(s.verify(&t, i64::MAX).is_some());
        assert!(s.verify(&t, i64::MIN).is_none());
        c.nbf = -1;
        let t = s.sign(&c).unwrap();
        assert!(s.verify(&t, 0).is_none());
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
