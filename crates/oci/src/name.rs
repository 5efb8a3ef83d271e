//! Repository names and tags.
//!
//! The grammar is distribution's, but a refusal names the offending path segment and
//! the rule it breaks: "invalid repository name" is the error users of other
//! registries complain about most.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// Clients limit `host[:port]/name` to 255 characters; we keep the name itself below it.
pub const MAX_NAME_LEN: usize = 255;

static COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\z").unwrap());
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\z").unwrap());

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("repository name {name:?}: segment {segment:?} {reason}")]
    BadSegment {
        name: String,
        segment: String,
        reason: &'static str,
    },
    #[error("tag {0:?} is invalid: a tag is 1 to 128 characters of letters, digits, '_', '.' and '-', and must not start with '.' or '-'")]
    BadTag(String),
}

/// A repository path such as `group/project/image`, validated.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        for segment in s.split('/') {
            if let Some(reason) = segment_problem(segment) {
                return Err(NameError::BadSegment {
                    name: s.to_string(),
                    segment: segment.to_string(),
                    reason,
                });
            }
        }
        Ok(RepoName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// Why one path segment is unusable, in words a user can act on; `None` when it is fine.
fn segment_problem(seg: &str) -> Option<&'static str> {
    if COMPONENT.is_match(seg) {
        return None;
    }
    let first = seg.chars().next();
    let last = seg.chars().last();
    Some(match (first, last) {
        (None, _) => "is empty (a name has no leading, trailing or double '/')",
        _ if seg.chars().any(|c| c.is_ascii_uppercase()) => {
            "contains upper-case letters; registry paths are lower case"
        }
        (Some('_'), _) => "starts with an underscore; segments must start with a letter or digit",
        (Some('-'), _) | (Some('.'), _) => {
            "starts with a separator; segments must start with a letter or digit"
        }
        (_, Some('-')) => "ends with a hyphen; segments must end with a letter or digit",
        (_, Some('_')) | (_, Some('.')) => {
            "ends with a separator; segments must end with a letter or digit"
        }
        _ if seg
            .chars()
            .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))) =>
        {
            "contains a character other than a-z, 0-9, '.', '_' and '-'"
        }
        _ => "has separators in a row that are not allowed (only '__' or a run of '-' may repeat)",
    })
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

/// A validated tag name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if TAG.is_match(s) {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::BadTag(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_distribution_names() {
        for ok in [
            "a",
            "group/project",
            "g/p/my/image",
            "a.b_c__d---e/f0",
            "x-y",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
    }

    fn reason(name: &str) -> (String, &'static str) {
        match RepoName::parse(name) {
            Err(NameError::BadSegment {
                segment, reason, ..
            }) => (segment, reason),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn names_the_bad_segment() {
        assert_eq!(reason("group/_private/img").0, "_private");
        assert!(reason("group/_private/img").1.contains("underscore"));
        assert_eq!(reason("group/proj-/img").0, "proj-");
        assert!(reason("group/proj-/img").1.contains("hyphen"));
        assert!(reason("Group/p").1.contains("upper-case"));
        assert!(reason("g//p").1.contains("empty"));
        assert!(reason("g/p/").1.contains("empty"));
        assert!(reason("g/a..b").1.contains("in a row"));
        assert!(reason("g/a b").1.contains("character"));
        assert_eq!(RepoName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            RepoName::parse(&"a".repeat(256)),
            Err(NameError::TooLong(256))
        ));
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }
}
