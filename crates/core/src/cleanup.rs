//! The tag cleanup engine: which tags a cleanup policy (or a bulk delete) removes.
//! One engine serves scheduled policy runs, the bulk-delete API and the preview.
//!
//! The steps, in order (GitLab's): take all tags; drop `latest`; keep only names
//! matching `name_regex`; drop names matching `name_regex_keep`; drop tags without a
//! manifest; sort by date, newest first (ties by name, so runs are repeatable); drop
//! the newest `keep_n`; drop those not older than `older_than`; delete the rest. The
//! date is the tag's push time, as GitLab's registry uses (see [`TagFacts`]), never
//! the image config's `created` (1970 or 1980 in reproducible builds).

use regex::Regex;

const DAY_MS: i64 = 24 * 3600 * 1000;

pub const CADENCES: &[&str] = &["1d", "7d", "14d", "1month", "3month"];
pub const KEEP_N_VALUES: &[i64] = &[1, 5, 10, 25, 50, 100];
pub const OLDER_THAN_VALUES: &[&str] = &["7d", "14d", "30d", "90d"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct PolicyError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field,
        message: message.into(),
    }
}

/// Compile a user's regex the way GitLab runs it: RE2 syntax, anchored at both ends.
pub fn compile(field: &'static str, pattern: &str) -> Result<Regex, PolicyError> {
    crate::re2::compile(pattern, true)
        .map_err(|e| err(field, format!("is not a valid RE2 regular expression: {e}")))
}

/// A duration such as `7d`, `1h`, `2 days`, `1month` (GitLab's `older_than`), in ms.
pub fn parse_duration(field: &'static str, text: &str) -> Result<i64, PolicyError> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| {
        err(
            field,
            format!("{text:?} is not a duration like 7d, 1h or 1month"),
        )
    })?;
    let unit_ms = match unit.trim() {
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => DAY_MS,
        "w" | "week" | "weeks" => 7 * DAY_MS,
        "month" | "months" | "mo" => 30 * DAY_MS,
        "y" | "year" | "years" => 365 * DAY_MS,
        _ => {
            return Err(err(
                field,
                format!("{text:?} is not a duration like 7d, 1h or 1month"),
            ))
        }
    };
    // A client may send any number of digits; one too large for i64 milliseconds is
    // not a duration, not a reason to overflow.
    n.checked_mul(unit_ms)
        .ok_or_else(|| err(field, format!("{text:?} is too long a duration")))
}

/// The policy as the engine needs it.
#[derive(Debug, Clone)]
pub struct Rules {
    pub name_regex: Regex,
    pub name_regex_keep: Option<Regex>,
    pub keep_n: Option<usize>,
    /// Only tags older than this (ms) are deleted.
    pub older_than_ms: Option<i64>,
}

impl Rules {
    /// Build from the stored/requested fields, refusing what GitLab refuses: an empty
    /// or invalid delete regex, an invalid keep regex.
    pub fn new(
        name_regex: Option<&str>,
        name_regex_keep: Option<&str>,
        keep_n: Option<i64>,
        older_than: Option<&str>,
    ) -> Result<Rules, PolicyError> {
        let delete = name_regex
            .filter(|r| !r.is_empty())
            .ok_or_else(|| err("name_regex", "can't be blank (use .* to match every tag)"))?;
        Ok(Rules {
            name_regex: compile("name_regex", delete)?,
            name_regex_keep: name_regex_keep
                .filter(|r| !r.is_empty())
                .map(|r| compile("name_regex_keep", r))
                .transpose()?,
            keep_n: match keep_n {
                Some(n) if n < 0 => return Err(err("keep_n", "must be 0 or more")),
                Some(n) => Some(n as usize),
                None => None,
            },
            older_than_ms: older_than
                .filter(|o| !o.is_empty())
                .map(|o| parse_duration("older_than", o))
                .transpose()?,
        })
    }
}

/// A tag as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    pub name: String,
    pub has_manifest: bool,
    /// The date tags are ordered and aged by (Unix ms, full precision): the tag's push
    /// time, as GitLab's registry uses (`updated_at || created_at` of the tag).
    pub created_at: i64,
}

/// Which step decided a tag's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Step 2: `latest` is never deleted.
    Latest,
    /// Step 3: the name does not match `name_regex`.
    NotMatched,
    /// Step 4: the name matches `name_regex_keep`.
    KeptByRegex,
    /// Step 5: the tag has no manifest.
    NoManifest,
    /// Step 7: among the newest `keep_n`.
    KeptNewest,
    /// Step 8: newer than `older_than`.
    TooNew,
    /// Step 9: deleted.
    Deleted,
    /// Would be deleted, but protection rule `n` keeps it (cleanup never deletes a
    /// protected or immutable tag).
    Protected(i64),
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Latest => "latest",
            Step::NotMatched => "name_regex",
            Step::KeptByRegex => "name_regex_keep",
            Step::NoManifest => "no_manifest",
            Step::KeptNewest => "keep_n",
            Step::TooNew => "older_than",
            Step::Deleted => "delete",
            Step::Protected(_) => "protected",
        }
    }

    /// What decided, for people: the step's name, or `protected by rule N`.
    pub fn describe(self) -> String {
        match self {
            Step::Protected(n) => format!("protected by rule {n}"),
            other => other.as_str().to_string(),
        }
    }

    pub fn deletes(self) -> bool {
        self == Step::Deleted
    }
}

/// Decide every tag: returns one step per input tag, in input order.
pub fn evaluate(tags: &[TagFacts], rules: &Rules, now: i64) -> Vec<Step> {
    let mut steps: Vec<Option<Step>> = vec![None; tags.len()];
    let mut candidates = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let step = if t.name == "latest" {
            Some(Step::Latest)
        } else if !rules.name_regex.is_match(&t.name) {
            Some(Step::NotMatched)
        } else if rules
            .name_regex_keep
            .as_ref()
            .is_some_and(|k| k.is_match(&t.name))
        {
            Some(Step::KeptByRegex)
        } else if !t.has_manifest {
            Some(Step::NoManifest)
        } else {
            None
        };
        match step {
            Some(s) => steps[i] = Some(s),
            None => candidates.push(i),
        }
    }
    // Newest first; ties broken by name so runs are repeatable.
    candidates.sort_by(|&a, &b| {
        tags[b]
            .created_at
            .cmp(&tags[a].created_at)
            .then_with(|| tags[a].name.cmp(&tags[b].name))
    });
    let keep = rules.keep_n.unwrap_or(0).min(candidates.len());
    for &i in &candidates[..keep] {
        steps[i] = Some(Step::KeptNewest);
    }
    for &i in &candidates[keep..] {
        // GitLab deletes only tags strictly older than the cut-off (`created_at <
        // older_than.ago`); one pushed exactly then stays.
        let too_new = rules
            .older_than_ms
            .is_some_and(|age| tags[i].created_at >= now.saturating_sub(age));
        steps[i] = Some(if too_new { Step::TooNew } else { Step::Deleted });
    }
    steps
        .into_iter()
        .map(|s| s.unwrap_or(Step::Deleted))
        .collect()
}

/// Validate a cleanup policy's fields as GitLab does (the allowed values of MISSION.md §5).
pub fn validate_policy_values(
    cadence: &str,
    keep_n: Option<i64>,
    older_than: Option<&str>,
) -> Result<(), PolicyError> {
    if !CADENCES.contains(&cadence) {
        return Err(err(
            "cadence",
            format!("is not one of {}", CADENCES.join(", ")),
        ));
    }
    if let Some(n) = keep_n {
        if !KEEP_N_VALUES.contains(&n) {
            return Err(err("keep_n", "is not one of 1, 5, 10, 25, 50, 100"));
        }
    }
    if let Some(o) = older_than {
        if !OLDER_THAN_VALUES.contains(&o) {
            return Err(err(
                "older_than",
                format!("is not one of {}", OLDER_THAN_VALUES.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// The digits (and nothing else) at byte range `r` of `s`, as a number.
fn num_in(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let t = s.get(r)?;
    t.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| t.parse().ok())?
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
}

/// An RFC 3339 time (`2026-01-02T03:04:05.678+01:00`, `…Z`) as Unix ms, honouring
/// the offset. Image configs carry their creation time this way.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |r: std::ops::Range<usize>| num_in(s, r);
    if s.len() < 19 || !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|b| b.is_ascii_digit()).count();
        let f = &frac[..digits];
        millis = format!("{:0<3}", &f[..f.len().min(3)]).parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" | "" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            // Exactly `±hh:mm`: `parse` alone would take a sign or trailing text.
            let b = rest.as_bytes();
            if b.len() != 6 || b[3] != b':' {
                return None;
            }
            let (oh, om) = (num_in(rest, 1..3)?, num_in(rest, 4..6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + millis)
}

/// `from` plus a cadence: days, or calendar months (clamped to the month's end).
pub fn next_run_at(cadence: &str, from: i64) -> i64 {
    let months = match cadence {
        "1month" => 1,
        "3month" => 3,
        "7d" => return from + 7 * DAY_MS,
        "14d" => return from + 14 * DAY_MS,
        _ => return from + DAY_MS,
    };
    let day = from.div_euclid(DAY_MS);
    let rem = from.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(day);
    let total = y * 12 + (m - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    days_from_civil(ny, nm, d.min(days_in_month(ny, nm))) * DAY_MS + rem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, age_days: i64) -> TagFacts {
        TagFacts {
            name: name.into(),
            has_manifest: true,
            created_at: NOW - age_days * DAY_MS,
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    fn deleted(tags: &[TagFacts], rules: &Rules) -> Vec<String> {
        let steps = evaluate(tags, rules, NOW);
        let mut out: Vec<String> = tags
            .iter()
            .zip(steps)
            .filter(|(_, s)| s.deletes())
            .map(|(t, _)| t.name.clone())
            .collect();
        out.sort();
        out
    }

    fn rules(delete: &str, keep: Option<&str>, keep_n: Option<i64>, older: Option<&str>) -> Rules {
        Rules::new(Some(delete), keep, keep_n, older).unwrap()
    }

    fn sample() -> Vec<TagFacts> {
        vec![
            tag("latest", 400),
            tag("main", 100),
            tag("v1.0", 200),
            tag("v1.1", 150),
            tag("v2.0", 10),
            tag("release-1", 120),
            tag("release-2", 5),
            tag("feature-x", 95),
            tag("stable", 300),
        ]
    }

    #[test]
    fn seed_examples() {
        let t = sample();
        // `.*` deletes everything but latest.
        assert_eq!(deleted(&t, &rules(".*", None, None, None)).len(), 8);
        // `v.+` matches only version tags; anchoring means `v` alone or `xv1` don't match.
        assert_eq!(
            deleted(&t, &rules("v.+", None, None, None)),
            vec!["v1.0", "v1.1", "v2.0"]
        );
        assert_eq!(deleted(&t, &rules("main", None, None, None)), vec!["main"]);
        assert_eq!(
            deleted(&t, &rules("release.*", None, None, None)),
            vec!["release-1", "release-2"]
        );
        // Keep v-tags, main and releases; delete the rest.
        assert_eq!(
            deleted(&t, &rules(".*", Some("(?:v.+|main|release.*)"), None, None)),
            vec!["feature-x", "stable"]
        );
        // Anchoring: "ain" does not match "main".
        assert!(deleted(&t, &rules("ain", None, None, None)).is_empty());
    }

    #[test]
    fn keep_n_and_older_than_in_order() {
        let t = sample();
        // Candidates (all but latest), newest first: release-2(5) v2.0(10) feature-x(95)
        // main(100) release-1(120) v1.1(150) v1.0(200) stable(300). Keep 2 newest, then
        // only those older than 90d go: feature-x (95) and older.
        let r = rules(".*", None, Some(2), Some("90d"));
        assert_eq!(
            deleted(&t, &r),
            vec!["feature-x", "main", "release-1", "stable", "v1.0", "v1.1"]
        );
        let steps = evaluate(&t, &r, NOW);
        assert_eq!(steps[0], Step::Latest);
        assert_eq!(steps[6], Step::KeptNewest); // release-2
                                                // keep_n larger than the candidates keeps all.
        assert!(deleted(&t, &rules(".*", None, Some(100), None)).is_empty());
        // older_than alone: only tags older than 100 days (main, exactly 100 days
        // old, is not older: GitLab compares strictly).
        assert_eq!(deleted(&t, &rules(".*", None, None, Some("100d"))).len(), 4);
    }

    #[test]
    fn tags_without_manifest_are_kept() {
        let mut t = sample();
        t[2].has_manifest = false;
        let steps = evaluate(&t, &rules(".*", None, None, None), NOW);
        assert_eq!(steps[2], Step::NoManifest);
    }

    #[test]
    fn refuses_bad_policies() {
        let e = Rules::new(Some(""), None, None, None).unwrap_err();
        assert_eq!(e.field, "name_regex");
        let e = Rules::new(None, None, None, None).unwrap_err();
        assert_eq!(e.field, "name_regex");
        let e = Rules::new(Some("(unclosed"), None, None, None).unwrap_err();
        assert_eq!(e.field, "name_regex");
        assert!(e.message.contains("RE2"));
        let e = Rules::new(Some(".*"), Some("[z-a]"), None, None).unwrap_err();
        assert_eq!(e.field, "name_regex_keep");
        // RE2 has no look-around.
        assert!(Rules::new(Some("(?!v).*"), None, None, None).is_err());
        assert!(Rules::new(Some(".*"), None, None, Some("soon")).is_err());
        assert!(validate_policy_values("2d", None, None).is_err());
        assert!(validate_policy_values("1d", Some(3), None).is_err());
        assert!(validate_policy_values("1d", Some(5), Some("60d")).is_err());
        assert!(validate_policy_values("3month", Some(100), Some("90d")).is_ok());
    }

    #[test]
    fn rfc3339_with_offsets() {
        let z = parse_rfc3339_ms("2026-11-26T09:48:59Z").unwrap();
        assert_eq!(parse_rfc3339_ms("2026-11-26T23:48:59+14:00"), Some(z));
        assert_eq!(parse_rfc3339_ms("2026-11-26T04:48:59-05:00"), Some(z));
        assert_eq!(parse_rfc3339_ms("2026-11-26T09:48:59.5Z"), Some(z + 500));
        assert_eq!(
            parse_rfc3339_ms("2019-01-06T16:49:51.272883405+00:00").map(|t| t % 1000),
            Some(272)
        );
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "",
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-11-26T09:48:59+1",
            "x026-11-26T09:48:59Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_and_cadence() {
        assert_eq!(parse_duration("x", "1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration("x", "2d").unwrap(), 2 * DAY_MS);
        assert_eq!(parse_duration("x", "1month").unwrap(), 30 * DAY_MS);
        assert_eq!(parse_duration("x", "14 days").unwrap(), 14 * DAY_MS);
        // 2026-01-31 + 1 month = 2026-02-28; + 3 months = 2026-04-30.
        let jan31 = days_from_civil(2026, 1, 31) * DAY_MS + 5000;
        assert_eq!(
            next_run_at("1month", jan31),
            days_from_civil(2026, 2, 28) * DAY_MS + 5000
        );
        assert_eq!(
            next_run_at("3month", jan31),
            days_from_civil(2026, 4, 30) * DAY_MS + 5000
        );
        assert_eq!(next_run_at("7d", 0), 7 * DAY_MS);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }
}
