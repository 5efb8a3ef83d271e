//! Which project owns an image path, and which group and project paths are valid.
//!
//! GitLab's rule: an image path is a project's full path followed by at most two more
//! segments, so only the three longest prefixes of a path can name its project, and
//! the longest existing one wins. Paths compare case-insensitively; registry paths
//! are lower case.

/// Segments an image path may have below its project's path.
pub const MAX_IMAGE_DEPTH: usize = 2;

/// Candidate project paths for `image_path`, longest first: the path itself and up to
/// two shorter prefixes, each with at least two segments (a project always lives in a
/// namespace). Lower-cased.
pub fn project_candidates(image_path: &str) -> Vec<String> {
    let lower = image_path.to_ascii_lowercase();
    let segments: Vec<&str> = lower.split('/').collect();
    (0..=MAX_IMAGE_DEPTH)
        .filter_map(|drop| segments.len().checked_sub(drop))
        .filter(|&n| n >= 2)
        .map(|n| segments[..n].join("/"))
        .collect()
}

/// Every prefix of `image_path` with at least two segments, longest first. Used to
/// explain a refusal: a shorter prefix that is a project means the path is too deep.
pub fn all_prefixes(image_path: &str) -> Vec<String> {
    let lower = image_path.to_ascii_lowercase();
    let segments: Vec<&str> = lower.split('/').collect();
    (2..=segments.len())
        .rev()
        .map(|n| segments[..n].join("/"))
        .collect()
}

/// The repository name inside its project: what follows `project_path/`, or `""` for
/// the project's root image.
pub fn repository_name<'a>(image_path: &'a str, project_path: &str) -> &'a str {
    image_path
        .get(project_path.len()..)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or("")
}

/// Why a group or project path segment is refused, or `None` when it is fine. The
/// rule keeps every project path usable as a registry path: letters, digits, and
/// single `.`, `_` or `-` between them.
pub fn path_segment_problem(segment: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric();
    if segment.is_empty() {
        return Some("path must not be empty".into());
    }
    if segment.len() > 255 {
        return Some("path is longer than 255 characters".into());
    }
    let lower = segment.to_ascii_lowercase();
    if lower.ends_with(".git") || lower.ends_with(".atom") {
        return Some(format!("path {segment:?} must not end with .git or .atom"));
    }
    let chars: Vec<char> = segment.chars().collect();
    if !ok_char(chars[0]) {
        return Some(format!(
            "path {segment:?} must start with a letter or digit (not '-', '_' or '.')"
        ));
    }
    if !ok_char(chars[chars.len() - 1]) {
        return Some(format!(
            "path {segment:?} must end with a letter or digit (not '-', '_' or '.')"
        ));
    }
    let mut prev_sep = false;
    for &c in &chars {
        let sep = matches!(c, '.' | '_' | '-');
        if !(ok_char(c) || sep) {
            return Some(format!(
                "path {segment:?} can only include non-accented letters, digits, '_', '-' and '.'"
            ));
        }
        if sep && prev_sep {
            return Some(format!(
                "path {segment:?} must not have two of '-', '_' or '.' in a row"
            ));
        }
        prev_sep = sep;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_the_three_longest_prefixes() {
        assert_eq!(
            project_candidates("G/P/my/image"),
            vec!["g/p/my/image", "g/p/my", "g/p"]
        );
        assert_eq!(project_candidates("g/p"), vec!["g/p"]);
        assert_eq!(project_candidates("g/p/img"), vec!["g/p/img", "g/p"]);
        assert!(project_candidates("single").is_empty());
        // Three below the project is too deep: the project is not a candidate.
        assert!(!project_candidates("g/p/a/b/c").contains(&"g/p".to_string()));
        assert_eq!(all_prefixes("a/b/c"), vec!["a/b/c", "a/b"]);
    }

    #[test]
    fn repository_names() {
        assert_eq!(repository_name("g/p/my/image", "g/p"), "my/image");
        assert_eq!(repository_name("g/p", "g/p"), "");
    }

    #[test]
    fn path_rules() {
        assert_eq!(path_segment_problem("my-project.v2"), None);
        assert_eq!(path_segment_problem("Group_1"), None);
        for bad in ["", "_x", "x-", ".x", "x..y", "a b", "é", "x.git", "x.atom"] {
            assert!(path_segment_problem(bad).is_some(), "{bad:?}");
        }
    }
}
