//! Randomized differential test of the cleanup selection against a plain, separate
//! transcription of GitLab's algorithm (MISSION.md §5; GitLab's
//! `Projects::ContainerRepository::CleanupTagsServiceBase` and the metadata-database
//! `Gitlab::CleanupTagsService`), written here from the Ruby step by step and sharing
//! nothing with the engine but the inputs:
//!
//! ```ruby
//! filter_out_latest!(tags)                      # drop `latest`
//! filter_by_name!(tags)                         # regex_delete.match?(name) && !regex_retain.match?(name)
//! tags = tags.select(&:manifest)                # tags without a manifest stay
//! tags = order_by_date_desc(tags)               # (updated_at || created_at) desc, then name
//! tags = tags.drop(keep_n) if keep_n            # the newest keep_n stay
//! tags.select! { |t| t.created_at < older_than.ago } if older_than
//! ```
//!
//! Dates are push times in milliseconds at full precision; random times come from a
//! small range so ties (and the older_than boundary) happen often. Regexes come from a
//! list of patterns whose RE2 and Rust meaning is the same, compiled here directly
//! with the `regex` crate, anchored as GitLab anchors them (`\A(?:…)\z`).

use std::collections::BTreeSet;

use berth_core::cleanup::{evaluate, Rules, TagFacts};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 24 * 3600 * 1000;

const PATTERNS: &[&str] = &[
    ".*",
    "v.+",
    "v[0-9]+",
    "a.*|b.*",
    "[ab]c?",
    "(?:rc|v)[0-9]*",
    "latest",
    "main",
    "x+",
    "b",
];
const OLDER: &[(&str, i64)] = &[("7d", 7 * DAY), ("14d", 14 * DAY), ("30d", 30 * DAY)];
const NAMES: &[&str] = &[
    "latest", "main", "v1", "v2", "v10", "a", "ab", "b", "bc", "c", "rc1", "rc", "x", "xx", "v",
];

#[derive(Debug, Clone)]
struct Tag {
    name: String,
    pushed: i64,
    manifest: bool,
}

fn anchored(p: &str) -> regex::Regex {
    regex::Regex::new(&format!(r"\A(?:{p})\z")).unwrap()
}

/// GitLab's selection, transcribed (see the module comment). Returns the names deleted.
fn gitlab(
    tags: &[Tag],
    delete: &str,
    keep: Option<&str>,
    keep_n: Option<usize>,
    older_than: Option<i64>,
) -> BTreeSet<String> {
    let regex_delete = anchored(delete);
    let regex_retain = keep.map(anchored);
    let mut tags: Vec<&Tag> = tags.iter().filter(|t| t.name != "latest").collect();
    tags.retain(|t| {
        regex_delete.is_match(&t.name)
            && !regex_retain.as_ref().is_some_and(|r| r.is_match(&t.name))
    });
    tags.retain(|t| t.manifest);
    tags.sort_by(|a, b| b.pushed.cmp(&a.pushed).then_with(|| a.name.cmp(&b.name)));
    if let Some(n) = keep_n {
        tags = tags.into_iter().skip(n).collect();
    }
    if let Some(age) = older_than {
        let cutoff = NOW - age;
        tags.retain(|t| t.pushed < cutoff);
    }
    tags.into_iter().map(|t| t.name.clone()).collect()
}

fn tags_strategy() -> impl Strategy<Value = Vec<Tag>> {
    // Unique names (a repository's tags are), push times around the cut-offs.
    proptest::sample::subsequence(NAMES, 0..NAMES.len()).prop_flat_map(|names| {
        let n = names.len();
        (
            Just(names),
            proptest::collection::vec(0i64..40, n),
            proptest::collection::vec(0i64..3, n),
            proptest::collection::vec(proptest::bool::weighted(0.9), n),
        )
            .prop_map(|(names, days, jitter, manifest)| {
                names
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| Tag {
                        name: name.to_string(),
                        // Whole days (so exactly 7, 14 or 30 days ago: the boundary)
                        // give or take a millisecond.
                        pushed: NOW - days[i] * DAY + (jitter[i] - 1),
                        manifest: manifest[i],
                    })
                    .collect()
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn cleanup_selects_what_gitlab_selects(
        tags in tags_strategy(),
        delete in proptest::sample::select(PATTERNS),
        keep in proptest::option::of(proptest::sample::select(PATTERNS)),
        keep_n in proptest::option::of(proptest::sample::select(&[0usize, 1, 2, 5, 10][..])),
        older in proptest::option::of(proptest::sample::select(OLDER)),
    ) {
        let rules = Rules::new(
            Some(delete),
            keep,
            keep_n.map(|n| n as i64),
            older.map(|(text, _)| text),
        )
        .unwrap();
        let facts: Vec<TagFacts> = tags
            .iter()
            .map(|t| TagFacts {
                name: t.name.clone(),
                has_manifest: t.manifest,
                created_at: t.pushed,
            })
            .collect();
        let ours: BTreeSet<String> = tags
            .iter()
            .zip(evaluate(&facts, &rules, NOW))
            .filter(|(_, s)| s.deletes())
            .map(|(t, _)| t.name.clone())
            .collect();
        let theirs = gitlab(&tags, delete, keep, keep_n, older.map(|(_, ms)| ms));
        prop_assert_eq!(ours, theirs);
    }
}
