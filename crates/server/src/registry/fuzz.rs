//! Fuzz properties of the `/v2` parsers of client input: routes, repository names,
//! references, digests, `Range` and `Content-Range` headers, query strings. Also the
//! runner the server crate's other fuzz properties use (JWTs, REST parameters, UI
//! list state). `BERTH_FUZZ_CASES` sets the cases per property (256 by default;
//! `scripts/fuzz` raises it).

use std::cell::Cell;
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use regex::Regex;

use super::blobs::parse_range;
use super::manifests::{parse_reference, Reference};
use super::uploads::{parse_content_range, range_len};
use super::{digits, parse_route, query_get, query_pairs, Route};
use crate::error::Code;

pub(crate) fn cases() -> u32 {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Run one property for `cases` inputs and report how many it ran; a failure names
/// the minimal input proptest shrank it to.
pub(crate) fn check_n<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let ran = Cell::new(0u64);
    let result = TestRunner::new(config).run(&strategy, |v| {
        ran.set(ran.get() + 1);
        test(v)
    });
    eprintln!("fuzz {name}: {} cases", ran.get());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!("{name}: {why}; minimal input: {input:?}"),
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
}

/// [`check_n`] with `BERTH_FUZZ_CASES` cases.
pub(crate) fn check<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    check_n(name, cases(), strategy, test)
}

// ---- routes, names, references --------------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec("[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?", 1..5).prop_map(|s| s.join("/")),
        1 => prop::collection::vec(prop::sample::select(vec![
            "blobs", "manifests", "uploads", "tags", "list", "referrers", "_catalog", "v2", "",
        ]), 1..5).prop_map(|s| s.join("/")),
        1 => "[a-zA-Z0-9/_.:@-]{0,30}",
    ]
}

fn last_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}",
        (any::<u64>()).prop_map(|n| berth_oci::Digest::sha256_of(&n.to_le_bytes()).to_string()),
        "\\PC{0,12}",
    ]
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tags,
    Manifest,
    Blob,
    UploadStart,
    Upload,
    Referrers,
}

fn route_text() -> impl Strategy<Value = (Kind, String, String)> {
    (
        prop::sample::select(vec![
            Kind::Tags,
            Kind::Manifest,
            Kind::Blob,
            Kind::UploadStart,
            Kind::Upload,
            Kind::Referrers,
        ]),
        name(),
        last_part(),
    )
}

#[test]
fn fuzz_routes_round_trip() {
    check("routes", route_text(), |(kind, name, last)| {
        // Reference strings never contain '/' (the router splits them off the end)
        // and are never empty. Mapped rather than assumed: rejecting that many
        // inputs makes proptest give up on long runs.
        let last = match last.replace('/', "_") {
            l if l.is_empty() => "x".to_string(),
            l => l,
        };
        let path = match kind {
            Kind::Tags => format!("{name}/tags/list"),
            Kind::Manifest => format!("{name}/manifests/{last}"),
            Kind::Blob => format!("{name}/blobs/{last}"),
            Kind::UploadStart => format!("{name}/blobs/uploads/"),
            Kind::Upload => format!("{name}/blobs/uploads/{last}"),
            Kind::Referrers => format!("{name}/referrers/{last}"),
        };
        let route = parse_route(&path);
        // A well-formed repository name always routes back to itself.
        if berth_oci::RepoName::parse(&name).is_ok() {
            let expected = match kind {
                Kind::Tags => Route::Tags(&name),
                Kind::Manifest => Route::Manifest(&name, &last),
                Kind::Blob if last == "uploads" => Route::UploadStart(&name),
                Kind::Blob => Route::Blob(&name, &last),
                Kind::UploadStart => Route::UploadStart(&name),
                Kind::Upload => Route::Upload(&name, &last),
                Kind::Referrers => Route::Referrers(&name, &last),
            };
            prop_assert_eq!(route, Some(expected));
        }
        Ok(())
    });
}

#[test]
fn fuzz_arbitrary_paths_route_without_panic() {
    let paths = prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop::sample::select(vec![
                "a",
                "blobs",
                "uploads",
                "manifests",
                "tags",
                "list",
                "referrers",
                "",
                "_catalog",
            ]),
            0..8
        )
        .prop_map(|s| s.join("/")),
    ];
    check("arbitrary paths", paths, |p| {
        if let Some(route) = parse_route(&p) {
            let _ = route.label(&axum::http::Method::GET);
            // Every name the router hands on is part of the path.
            let name = match route {
                Route::Base | Route::Catalog => "",
                Route::Tags(n) | Route::UploadStart(n) => n,
                Route::Manifest(n, _)
                | Route::Blob(n, _)
                | Route::Upload(n, _)
                | Route::Referrers(n, _) => n,
            };
            prop_assert!(p.starts_with(name));
            let _ = super::repo_name(name);
        }
        Ok(())
    });
}

/// distribution's tag grammar (Go's `\w` is ASCII).
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\z").unwrap());
static DIGEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\z").unwrap());

#[test]
fn fuzz_references_are_tags_or_digests() {
    check("references", last_part(), |text| {
        match parse_reference(&text) {
            Ok(Reference::Tag(t)) => {
                prop_assert!(TAG.is_match(&text));
                prop_assert_eq!(t.as_str(), text.as_str());
            }
            Ok(Reference::Digest(d)) => {
                prop_assert!(DIGEST.is_match(&text));
                prop_assert_eq!(d.as_str(), text.as_str());
            }
            Err(e) if text.contains(':') => {
                prop_assert!(!DIGEST.is_match(&text));
                prop_assert!(matches!(e.code, Code::DigestInvalid));
            }
            Err(e) => {
                prop_assert!(!TAG.is_match(&text));
                prop_assert!(matches!(e.code, Code::TagInvalid));
            }
        }
        Ok(())
    });
}

// ---- Range and Content-Range --------------------------------------------------------------

/// What RFC 9110 §14.1.2 says one `bytes=` range of a `size`-byte blob selects:
/// `Some(Some((first, last)))`, `Some(None)` (serve it all) or `None` (416).
fn reference_range(header: Option<&str>, size: u64) -> Option<Option<(u64, u64)>> {
    // The unit is case-insensitive (RFC 9110 §14.1): compare it lowercased.
    let lowered = header.map(|h| h.trim().to_ascii_lowercase());
    let Some(spec) = lowered.as_deref().and_then(|h| h.strip_prefix("bytes=")) else {
        return Some(None);
    };
    if spec.contains(',') {
        return Some(None);
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let number = |t: &str| -> Option<u128> {
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let t = t.trim_start_matches('0');
        if t.is_empty() {
            return Some(0);
        }
        t.parse::<u128>().ok().filter(|&n| n <= u64::MAX as u128)
    };
    let size = size as u128;
    let (first, last) = if a.is_empty() {
        let n = number(b)?;
        if n == 0 || size == 0 {
            return None;
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let first = number(a)?;
        let last = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            number(b)?
        };
        if last < first {
            return None;
        }
        (first, last.min(size.saturating_sub(1)))
    };
    (first < size).then_some(Some((first as u64, last as u64)))
}

fn range_header() -> impl Strategy<Value = Option<String>> {
    let pos = || {
        prop_oneof![
            3 => (0u64..40).prop_map(|n| n.to_string()),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => Just("18446744073709551616".to_string()),
            1 => Just(String::new()),
            1 => "[+ 0-9a-z-]{0,4}",
        ]
    };
    prop::option::of(prop_oneof![
        6 => (prop::sample::select(vec!["bytes=", "bytes= ", "Bytes=", "items=", " bytes="]), pos(), pos())
            .prop_map(|(u, a, b)| format!("{u}{a}-{b}")),
        1 => (pos(), pos(), pos(), pos()).prop_map(|(a, b, c, d)| format!("bytes={a}-{b},{c}-{d}")),
        1 => any::<String>(),
    ])
}

#[test]
fn fuzz_blob_ranges_follow_rfc_9110() {
    let sizes = prop_oneof![0u64..30, any::<u64>()];
    check("blob Range", (range_header(), sizes), |(header, size)| {
        let ours = parse_range(header.as_deref(), size)
            .ok()
            .map(|r| r.map(|r| (r.start, r.end)));
        prop_assert_eq!(ours, reference_range(header.as_deref(), size));
        if let Some(Some((start, end))) = ours {
            // What 206 will say and send: inside the blob.
            prop_assert!(start <= end && end < size);
        }
        Ok(())
    });
}

#[test]
fn fuzz_content_ranges_round_trip() {
    let values = prop_oneof![
        4 => (prop::sample::select(vec!["", "bytes=", "bytes ", " "]), any::<u64>(), any::<u64>(), prop::sample::select(vec!["", "/*", "/100", " "]))
            .prop_map(|(p, a, b, t)| (format!("{p}{a}-{b}{t}"), Some((a, b)))),
        4 => (0u64..50, 0u64..50).prop_map(|(a, b)| (format!("{a}-{b}"), Some((a, b)))),
        2 => "[0-9+ /a-z-]{0,12}".prop_map(|s| (s, None)),
        1 => any::<String>().prop_map(|s| (s, None)),
    ];
    check("Content-Range", values, |(text, sent)| {
        let parsed = parse_content_range(&text);
        if let Some((a, b)) = sent {
            prop_assert_eq!(parsed, (b >= a).then_some((a, b)), "{}", text);
        }
        if let Some((a, b)) = parsed {
            prop_assert!(b >= a);
            // The chunk's length is a u64 or nothing: never an overflow.
            let len = range_len(a, b);
            prop_assert_eq!(
                len.map(u128::from),
                Some(u128::from(b) - u128::from(a) + 1).filter(|&n| n <= u128::from(u64::MAX))
            );
        }
        Ok(())
    });
}

#[test]
fn fuzz_digits_are_decimal_only() {
    check(
        "digits",
        prop_oneof!["[0-9+ -]{0,22}", any::<String>()],
        |t| {
            let ours = digits(&t);
            let reference = (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<u64>().ok())
                .flatten();
            prop_assert_eq!(ours, reference);
            Ok(())
        },
    );
}

#[test]
fn fuzz_query_strings() {
    let queries = prop_oneof![
        prop::collection::vec(("[a-z%=&+]{0,6}", "[a-zA-Z0-9%:/+=&]{0,10}"), 0..5).prop_map(|kv| {
            kv.into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        }),
        any::<String>(),
    ];
    check("query strings", queries, |q| {
        let pairs = query_pairs(&q);
        for (k, v) in &pairs {
            prop_assert_eq!(query_get(&pairs, k).is_some(), true);
            let _ = v;
        }
        // Re-encoding what was decoded decodes to the same pairs.
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            s.append_pair(k, v);
        }
        prop_assert_eq!(query_pairs(&s.finish()), pairs);
        Ok(())
    });
}

#[test]
fn fuzz_listing_pages() {
    let values = prop_oneof![
        3 => (0u64..200_000).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["", "-1", "+5", " 5", "1e3", "4294967296"]).prop_map(String::from),
        1 => any::<String>(),
    ];
    check(
        "tags list and catalog n/last",
        (values, "\\PC{0,12}"),
        |(n, last)| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("n", &n).append_pair("last", &last);
            match super::listing::page(&q.finish()) {
                Ok(p) => {
                    let expected = if n.is_empty() {
                        None
                    } else {
                        n.parse::<u32>().ok()
                    };
                    prop_assert_eq!(p.n, expected.map(|x| x.min(super::listing::MAX_PAGE)));
                    prop_assert_eq!(p.last, Some(last).filter(|l| !l.is_empty()));
                }
                Err(e) => {
                    prop_assert!(matches!(e.code, Code::PaginationNumberInvalid));
                    prop_assert!(n.parse::<u32>().is_err());
                }
            }
            Ok(())
        },
    );
}

// ---- regressions found by the properties above ----------------------------------------

#[test]
fn a_content_range_longer_than_u64_has_no_length() {
    assert_eq!(
        parse_content_range("0-18446744073709551615"),
        Some((0, u64::MAX))
    );
    assert_eq!(range_len(0, u64::MAX), None);
    assert_eq!(range_len(1, u64::MAX), Some(u64::MAX));
}

#[test]
fn range_positions_with_a_sign_are_refused() {
    assert_eq!(parse_range(Some("bytes=+1-2"), 10), Err(()));
    assert_eq!(parse_content_range("+1-2"), None);
}
