//! Content digests (`algorithm:hex`) and the streaming hasher that produces them.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form algorithm:hex")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    #[error(
        "digest {0:?} has a hex part of the wrong length or with characters other than 0-9a-f"
    )]
    BadHex(String),
    #[error("saved hash state is not a valid {0} state")]
    BadState(&'static str),
}

/// A validated digest. Stored as its canonical string so it can be used as a key
/// everywhere (maps, SQL, file names) without re-formatting.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
    alg: Algorithm,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        let alg: Algorithm = alg.parse()?;
        if hex.len() != alg.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadHex(s.to_string()));
        }
        Ok(Digest {
            text: s.to_string(),
            alg,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The hex part, without the `algorithm:` prefix.
    pub fn hex(&self) -> &str {
        &self.text[self.alg.as_str().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Digest of a byte slice (manifests, small test blobs).
    pub fn of(alg: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(alg);
        h.update(data);
        h.finish()
    }

    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher for either supported algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm().as_str())
    }
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The hash's midstate (including its partial block), so that an upload received
    /// by one node can be continued on another without re-reading its bytes, which
    /// object storage cannot do for an unfinished multipart upload.
    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// The inverse of [`Hasher::save`].
    pub fn restore(alg: Algorithm, state: &[u8]) -> Result<Hasher, DigestError> {
        let bad = || DigestError::BadState(alg.as_str());
        Ok(match alg {
            Algorithm::Sha256 => {
                let a = state.try_into().map_err(|_| bad())?;
                Hasher::Sha256(Sha256::deserialize(a).map_err(|_| bad())?)
            }
            Algorithm::Sha512 => {
                let a = state.try_into().map_err(|_| bad())?;
                Hasher::Sha512(Sha512::deserialize(a).map_err(|_| bad())?)
            }
        })
    }

    pub fn finish(self) -> Digest {
        let (alg, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            text: format!("{}:{}", alg.as_str(), hex),
            alg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_continues_the_hash() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = Hasher::new(alg);
            // An odd length leaves a partial block that the state must carry.
            h.update(&[7u8; 1000]);
            let saved = h.save();
            let mut again = Hasher::restore(alg, &saved).unwrap();
            again.update(b"tail");
            let mut whole = vec![7u8; 1000];
            whole.extend_from_slice(b"tail");
            assert_eq!(again.finish(), Digest::of(alg, &whole));
            assert!(Hasher::restore(alg, &saved[1..]).is_err());
        }
        let sha512 = Hasher::new(Algorithm::Sha512).save();
        assert!(Hasher::restore(Algorithm::Sha256, &sha512).is_err());
    }

    #[test]
    fn parses_and_rejects() {
        let d = Digest::sha256_of(b"{}");
        assert_eq!(
            d.as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.hex().len(), 64);
        assert!(matches!(
            Digest::parse("sha256:abc"),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!(
            Digest::parse("md5:abc"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse("nocolon"),
            Err(DigestError::Malformed(_))
        ));
        let upper = format!("sha256:{}", d.hex().to_uppercase());
        assert!(Digest::parse(&upper).is_err());
        let s512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(
            Digest::parse(s512.as_str()).unwrap().algorithm(),
            Algorithm::Sha512
        );
    }
}
