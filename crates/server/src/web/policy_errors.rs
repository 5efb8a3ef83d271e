//! Cleanup-policy form errors in the page's language. The REST API refuses a bad
//! policy in English, as GitLab does; the settings page explains the same refusal in
//! the viewer's language, down to what is wrong in a regex and where.

use regex_syntax::ast::ErrorKind;

use super::i18n::Lang;

/// The message shown next to `field` (submitted as `value`) that the API refused.
pub fn field_problem(lang: Lang, field: &str, value: &str) -> String {
    match field {
        "name_regex" | "name_regex_keep" => match regex_problem(lang, value) {
            Some(why) => why,
            None if value.trim().is_empty() => lang.text("policy_err_regex_empty"),
            None => lang.text("policy_err_invalid"),
        },
        _ => lang.text("policy_err_invalid"),
    }
}

/// Why `pattern` is not a valid RE2 pattern, in `lang`; `None` when it is one.
pub fn regex_problem(lang: Lang, pattern: &str) -> Option<String> {
    use berth_core::re2::{self, Re2ErrorKind as K};
    let (key, at) = match re2::translate(pattern) {
        // What RE2 itself refuses, found while reading it as RE2.
        Err(e) => (
            match e.kind {
                K::Repetition => "regex_err_repetition_count",
                K::RepetitionTwice => "regex_err_repetition_twice",
                K::RepetitionMissing => "regex_err_repetition_missing",
                K::Escape => "regex_err_escape",
                K::Class => "regex_err_class_range",
                K::ClassUnclosed => "regex_err_class_unclosed",
                K::Group => "regex_err_group_name",
                K::GroupUnclosed => "regex_err_group_unclosed",
                K::Lookaround => "regex_err_lookaround",
                K::Flag => "regex_err_flag",
                K::Syntax => "regex_err_syntax",
                K::TooBig => "regex_err_too_big",
            },
            Some(e.offset),
        ),
        // The rest, found by the engine in the translation and placed back in the
        // user's text.
        Ok(t) => match regex_syntax::Parser::new().parse(&t.pattern) {
            // It parses; the engine may still refuse it as too large once compiled.
            Ok(_) => {
                regex::Regex::new(&t.pattern).err()?;
                ("regex_err_too_big", None)
            }
            Err(regex_syntax::Error::Parse(e)) => (
                parse_error_key(e.kind()),
                Some(t.original_offset(e.span().start.offset)),
            ),
            Err(regex_syntax::Error::Translate(e)) => (
                "regex_err_unsupported",
                Some(t.original_offset(e.span().start.offset)),
            ),
            Err(_) => ("regex_err_syntax", None),
        },
    };
    let reason = lang.text(key);
    Some(match at {
        // Characters, not bytes, counted from one as people count.
        Some(offset) => lang
            .text("regex_err_at")
            .replace("{reason}", &reason)
            .replace(
                "{position}",
                &(pattern[..offset.min(pattern.len())].chars().count() + 1).to_string(),
            ),
        None => reason,
    })
}

fn parse_error_key(kind: &ErrorKind) -> &'static str {
    use ErrorKind::*;
    match kind {
        GroupUnclosed => "regex_err_group_unclosed",
        GroupUnopened => "regex_err_group_unopened",
        ClassUnclosed => "regex_err_class_unclosed",
        ClassRangeInvalid | ClassRangeLiteral | ClassEscapeInvalid => "regex_err_class_range",
        RepetitionMissing => "regex_err_repetition_missing",
        RepetitionCountInvalid
        | RepetitionCountDecimalEmpty
        | RepetitionCountUnclosed
        | DecimalEmpty
        | DecimalInvalid => "regex_err_repetition_count",
        EscapeUnrecognized
        | EscapeUnexpectedEof
        | EscapeHexEmpty
        | EscapeHexInvalid
        | EscapeHexInvalidDigit => "regex_err_escape",
        UnsupportedLookAround | UnsupportedBackreference => "regex_err_lookaround",
        FlagDanglingNegation
        | FlagDuplicate { .. }
        | FlagRepeatedNegation { .. }
        | FlagUnexpectedEof
        | FlagUnrecognized => "regex_err_flag",
        GroupNameDuplicate { .. } | GroupNameEmpty | GroupNameInvalid | GroupNameUnexpectedEof => {
            "regex_err_group_name"
        }
        _ => "regex_err_syntax",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_errors_say_what_and_where_in_both_languages() {
        let en = field_problem(Lang::En, "name_regex", "v(1");
        assert_eq!(
            en,
            "an opening parenthesis is never closed (at character 2)."
        );
        let zh = field_problem(Lang::ZhCn, "name_regex", "v(1");
        assert!(zh.contains("左括号") && zh.contains('2'), "{zh}");
        assert!(!zh.is_ascii());
        // Positions count characters, not bytes.
        let at = field_problem(Lang::En, "name_regex_keep", "éé(");
        assert!(at.contains("character 3"), "{at}");
        assert!(field_problem(Lang::En, "name_regex", "(?=v)").contains("look-around"));
        assert!(field_problem(Lang::En, "name_regex", "[z-a]").contains("range"));
        // RE2's rules, not the `regex` crate's: accepted, and refused, as RE2 does.
        assert_eq!(regex_problem(Lang::En, r"v{,2}"), None);
        assert_eq!(regex_problem(Lang::En, r"\Qv1.0\E"), None);
        assert_eq!(
            field_problem(Lang::En, "name_regex", "a**"),
            "a repetition operator cannot follow another one (at character 3)."
        );
        // Positions point into the user's text even after a quoted part.
        assert!(field_problem(Lang::En, "name_regex", r"\Q((\E(").contains("character 7"));
    }

    #[test]
    fn other_refusals_are_translated_too() {
        assert_eq!(
            field_problem(Lang::ZhCn, "name_regex", ""),
            Lang::ZhCn.text("policy_err_regex_empty")
        );
        assert_eq!(
            field_problem(Lang::ZhCn, "keep_n", "3"),
            Lang::ZhCn.text("policy_err_invalid")
        );
        assert_ne!(
            Lang::ZhCn.text("policy_err_invalid"),
            Lang::En.text("policy_err_invalid")
        );
    }
}
