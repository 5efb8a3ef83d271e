//! Fuzz properties of the domain's parsers of client input: group and project path
//! segments, the image-path → project rules, cleanup-policy regexes and durations,
//! and the RFC 3339 times read from image configs. `BERTH_FUZZ_CASES` sets the cases
//! per property (256 by default; `scripts/fuzz` raises it).

use std::cell::Cell;
use std::sync::LazyLock;

use berth_core::cleanup::{
    compile, evaluate, parse_duration, parse_rfc3339_ms, validate_policy_values, Rules, Step,
    TagFacts, CADENCES, KEEP_N_VALUES, OLDER_THAN_VALUES,
};
use berth_core::paths::{all_prefixes, path_segment_problem, project_candidates, repository_name};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use regex::Regex;

fn cases() -> u32 {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Run one property and report how many cases it ran; a failure names the minimal
/// input proptest shrank it to.
fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(),
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

// ---- group and project paths ----------------------------------------------------------

/// GitLab's path rule as a grammar: letters and digits, single separators between.
static PATH_SEGMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\z").unwrap());
/// distribution's repository path component: what a project path must stay usable as.
static DISTRIBUTION_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*\z").unwrap());

fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-zA-Z0-9]{1,6}([._-][a-zA-Z0-9]{1,5}){0,3}",
        2 => "[a-zA-Z0-9._ -]{0,10}",
        1 => "[a-z]{1,5}\\.(git|atom|GIT)",
        1 => "[a-z0-9]{250,260}",
        1 => "\\PC{0,6}",
        1 => any::<String>(),
    ]
}

#[test]
fn fuzz_path_segments_follow_the_grammar() {
    check("path segment", path_segment(), |s| {
        let problem = path_segment_problem(&s);
        let lower = s.to_ascii_lowercase();
        let reference = PATH_SEGMENT.is_match(&s)
            && s.len() <= 255
            && !lower.ends_with(".git")
            && !lower.ends_with(".atom");
        prop_assert_eq!(problem.is_none(), reference, "{:?}: {:?}", s, problem);
        if problem.is_none() {
            // Every accepted project path is a valid registry path once lower-cased.
            prop_assert!(DISTRIBUTION_COMPONENT.is_match(&lower));
        }
        Ok(())
    });
}

fn image_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec("[a-zA-Z0-9]{1,5}([._-][a-z0-9]{1,3})?", 0..8).prop_map(|s| s.join("/")),
        1 => "[a-zA-Z0-9/]{0,20}",
        1 => any::<String>(),
    ]
}

#[test]
fn fuzz_project_candidates_are_prefixes() {
    check("project candidates", image_path(), |path| {
        let lower = path.to_ascii_lowercase();
        let segments = lower.split('/').count();
        let candidates = project_candidates(&path);
        let prefixes = all_prefixes(&path);
        // At most the three longest prefixes with two or more segments, longest first.
        prop_assert_eq!(candidates.len(), segments.saturating_sub(1).min(3));
        prop_assert_eq!(&prefixes[..candidates.len()], &candidates[..]);
        prop_assert_eq!(prefixes.len(), segments.saturating_sub(1));
        for (i, c) in prefixes.iter().enumerate() {
            prop_assert_eq!(c.split('/').count(), segments - i);
            let below = format!("{c}/");
            prop_assert!(lower == *c || lower.starts_with(&below));
            // The project path and the repository name inside it make the image path.
            let rest = repository_name(&path, c);
            if path.split('/').any(str::is_empty) {
                // Not an image path (RepoName refuses empty segments): only no panic.
                continue;
            }
            if rest.is_empty() {
                prop_assert!(lower == *c || lower == below);
            } else {
                prop_assert_eq!(format!("{c}/{rest}").to_ascii_lowercase(), lower.clone());
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_repository_name_of_unrelated_paths_never_panics() {
    check(
        "repository name",
        (any::<String>(), any::<String>()),
        |(image, project)| {
            let rest = repository_name(&image, &project);
            prop_assert!(image.ends_with(rest));
            Ok(())
        },
    );
}

// ---- cleanup policies ---------------------------------------------------------------

fn regex_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            ".*", "v.+", "main|release-.*", "(?:a|b)*", "[a-z]+", "(unclosed", "[z-a]",
            "(?!v).*", "a{1000}{1000}", "\\", "(?x)a#", "(?i)LATEST", "\\p{Greek}+", "",
            "a**", "x{2,1}", "\\bword\\b", "(?P<n>a)", "[[:alpha:]]", "a)|(b",
        ]).prop_map(String::from),
        4 => "[a-z0-9.*+?|()\\[\\]{}^$\\\\-]{0,16}",
        1 => any::<String>(),
    ]
}

fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(OLDER_THAN_VALUES.to_vec()).prop_map(String::from),
        3 => ("[0-9]{1,22}", prop::sample::select(vec![
            "m", "min", "h", "hours", "d", " days", "w", "month", "mo", "y", "years", "", "x", "D",
        ])).prop_map(|(n, u)| format!("{n}{u}")),
        1 => any::<String>(),
    ]
}

#[test]
fn fuzz_durations_never_overflow() {
    check("duration", duration_text(), |text| {
        match parse_duration("older_than", &text) {
            Ok(ms) => {
                prop_assert!(ms >= 0);
                // Units are case-insensitive.
                if text.is_ascii() {
                    prop_assert_eq!(parse_duration("older_than", &text.to_uppercase()), Ok(ms));
                }
            }
            Err(e) => {
                prop_assert_eq!(e.field, "older_than");
                let quoted = format!("{text:?}");
                prop_assert!(e.message.contains(&quoted));
            }
        }
        Ok(())
    });
}

fn tag_facts() -> impl Strategy<Value = Vec<TagFacts>> {
    prop::collection::vec(
        (
            prop_oneof![Just("latest".to_string()), "[a-z0-9._-]{1,8}"],
            any::<bool>(),
            prop_oneof![any::<i64>(), 1_700_000_000_000i64..1_900_000_000_000],
        )
            .prop_map(|(name, has_manifest, created_at)| TagFacts {
                name,
                has_manifest,
                created_at,
            }),
        0..30,
    )
}

#[test]
fn fuzz_policy_rules_and_evaluation() {
    let input = (
        prop::option::of(regex_text()),
        prop::option::of(regex_text()),
        prop::option::of(prop_oneof![any::<i64>(), -2i64..120]),
        prop::option::of(duration_text()),
        tag_facts(),
        any::<i64>(),
    );
    check(
        "policy rules",
        input,
        |(delete, keep, keep_n, older, tags, now)| {
            let rules = Rules::new(delete.as_deref(), keep.as_deref(), keep_n, older.as_deref());
            let rules = match rules {
                Ok(r) => r,
                Err(e) => {
                    prop_assert!(["name_regex", "name_regex_keep", "keep_n", "older_than"]
                        .contains(&e.field));
                    return Ok(());
                }
            };
            let delete = delete.unwrap();
            // Anchored at both ends: a match covers the whole name.
            // (Read as RE2: the pattern in the `regex` crate's syntax.)
            let plain = Regex::new(&berth_core::re2::translate(&delete).unwrap().pattern).unwrap();
            let steps = evaluate(&tags, &rules, now);
            prop_assert_eq!(steps.len(), tags.len());
            let mut kept_newest = 0;
            for (t, step) in tags.iter().zip(&steps) {
                if rules.name_regex.is_match(&t.name) {
                    prop_assert!(plain.is_match(&t.name));
                }
                match step {
                    Step::Latest => prop_assert_eq!(t.name.as_str(), "latest"),
                    Step::Deleted => {
                        prop_assert!(t.name != "latest" && t.has_manifest);
                        prop_assert!(rules.name_regex.is_match(&t.name));
                        prop_assert!(!rules
                            .name_regex_keep
                            .as_ref()
                            .is_some_and(|k| k.is_match(&t.name)));
                    }
                    Step::KeptNewest => kept_newest += 1,
                    _ => {}
                }
            }
            prop_assert!(kept_newest <= rules.keep_n.unwrap_or(0));
            Ok(())
        },
    );
}

#[test]
fn fuzz_compile_is_anchored() {
    check(
        "compile",
        (regex_text(), "[a-z0-9.]{0,8}"),
        |(pattern, name)| {
            if let Ok(re) = compile("name_regex", &pattern) {
                let rust = berth_core::re2::translate(&pattern).unwrap().pattern;
                let whole = Regex::new(&format!("^(?:{rust})$")).unwrap();
                prop_assert_eq!(re.is_match(&name), whole.is_match(&name));
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_policy_values() {
    let input = (
        prop_oneof![
            prop::sample::select(CADENCES.to_vec()).prop_map(String::from),
            any::<String>()
        ],
        prop::option::of(prop_oneof![
            prop::sample::select(KEEP_N_VALUES.to_vec()),
            any::<i64>()
        ]),
        prop::option::of(duration_text()),
    );
    check("policy values", input, |(cadence, keep_n, older)| {
        let ok = validate_policy_values(&cadence, keep_n, older.as_deref()).is_ok();
        let reference = CADENCES.contains(&cadence.as_str())
            && keep_n.is_none_or(|n| KEEP_N_VALUES.contains(&n))
            && older
                .as_deref()
                .is_none_or(|o| OLDER_THAN_VALUES.contains(&o));
        prop_assert_eq!(ok, reference);
        Ok(())
    });
}

// ---- RFC 3339 times ---------------------------------------------------------------------

/// A time as the parts it is written with.
#[derive(Debug, Clone)]
struct Time {
    y: i64,
    mo: i64,
    d: i64,
    h: i64,
    mi: i64,
    s: i64,
    frac: String,
    offset: Option<(bool, i64, i64)>,
}

impl Time {
    fn text(&self) -> String {
        let frac = if self.frac.is_empty() {
            String::new()
        } else {
            format!(".{}", self.frac)
        };
        let zone = match self.offset {
            None => "Z".to_string(),
            Some((plus, h, m)) => format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' }),
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{zone}",
            self.y, self.mo, self.d, self.h, self.mi, self.s
        )
    }
}

fn time() -> impl Strategy<Value = Time> {
    (
        (1970i64..=9999, 1i64..=12, 1i64..=31),
        (0i64..24, 0i64..60, 0i64..60),
        "[0-9]{0,9}",
        prop::option::of((any::<bool>(), 0i64..24, 0i64..60)),
    )
        .prop_map(|((y, mo, d), (h, mi, s), frac, offset)| Time {
            y,
            mo,
            d,
            h,
            mi,
            s,
            frac,
            offset,
        })
}

#[test]
fn fuzz_rfc3339_agrees_with_humantime() {
    check("rfc3339", time(), |t| {
        let text = t.text();
        let ours = parse_rfc3339_ms(&text);
        let utc = Time {
            offset: None,
            ..t.clone()
        }
        .text();
        // humantime is the reference for UTC times (it reads no offsets).
        let reference = humantime::parse_rfc3339(&utc).ok().map(|st| {
            st.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        });
        match (reference, t.offset) {
            (None, _) => prop_assert_eq!(ours, None, "{}", text),
            (Some(r), None) => prop_assert_eq!(ours, Some(r), "{}", text),
            (Some(r), Some((plus, h, m))) => {
                let shift = (h * 60 + m) * 60_000;
                let expect = if plus { r - shift } else { r + shift };
                prop_assert_eq!(ours, Some(expect), "{}", text);
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_rfc3339_arbitrary_text() {
    let text = prop_oneof![
        time().prop_map(|t| t.text()).prop_flat_map(|s| {
            let len = s.len();
            (Just(s), 0..=len, "\\PC{0,3}")
        }).prop_map(|(s, cut, tail)| {
            // Cut short or with something appended: never a panic.
            let mut s = s;
            while !s.is_char_boundary(cut.min(s.len())) {
                s.pop();
            }
            s.truncate(cut.min(s.len()));
            s + &tail
        }),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,4})?([Zz]|[+-][0-9:+-]{0,6})?",
        any::<String>(),
    ];
    check("rfc3339 text", text, |s| {
        if let Some(ms) = parse_rfc3339_ms(&s) {
            // Whatever it accepts is a real time of years 0000-9999, give or take a day.
            prop_assert!(
                (-62_167_219_200_000 - 86_400_000..253_402_300_800_000 + 86_400_000).contains(&ms)
            );
        }
        Ok(())
    });
}

// ---- regressions found by the properties above ----------------------------------------

#[test]
fn a_huge_duration_is_refused_not_overflowed() {
    // `fuzz_durations_never_overflow` catches this: 99999999999999999 years overflowed i64
    // milliseconds (a panic in debug builds, a wrapped, possibly negative age in
    // release ones, so a bulk delete's `older_than` could have deleted new tags).
    let e = parse_duration("older_than", "99999999999999999y").unwrap_err();
    assert!(parse_duration("older_than", "4000000000month").is_err());
    assert_eq!(e.field, "older_than");
    assert!(e.message.contains("too long"));
    assert!(parse_duration("older_than", "9223372036854775807m").is_err());
    let rules = Rules::new(Some(".*"), None, None, Some("106751991167d")).unwrap();
    let new = TagFacts {
        name: "new".into(),
        has_manifest: true,
        created_at: 0,
    };
    assert_eq!(evaluate(&[new], &rules, i64::MIN + 1), vec![Step::TooNew]);
}

#[test]
fn impossible_dates_and_offsets_are_not_times() {
    // Found by `fuzz_rfc3339_agrees_with_humantime`: 31 February was read as 3 March.
    assert_eq!(parse_rfc3339_ms("2026-02-31T00:00:00Z"), None);
    assert_eq!(parse_rfc3339_ms("2023-02-29T00:00:00Z"), None);
    assert!(parse_rfc3339_ms("2024-02-29T00:00:00Z").is_some());
    // An offset is exactly ±hh:mm.
    assert_eq!(parse_rfc3339_ms("2026-01-01T00:00:00+01:00junk"), None);
    assert_eq!(parse_rfc3339_ms("2026-01-01T00:00:00+-1:00"), None);
    assert_eq!(parse_rfc3339_ms("2026-01-01T00:00:00+0100"), None);
    assert_eq!(parse_rfc3339_ms("2026-01-01T00:00:00+25:00"), None);
}
