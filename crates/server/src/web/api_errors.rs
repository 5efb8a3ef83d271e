//! The REST API's refusals in the page's language. The API words its errors as
//! GitLab does, in English, and forms show them next to their field; on a Chinese
//! page each known wording is mapped to a catalogue entry (`apierr_*`), with what
//! varies in it (the path typed, a date, a role) filled in. A wording without an
//! entry is shown as the API gave it, which the unit test below keeps from happening
//! for every message a form can get.

use super::i18n::Lang;

/// A field's name on a page (`field_<name>` in the catalogue, else the API's name).
fn label(lang: Lang, field: &str) -> String {
    lang.catalog()
        .get(&format!("field_{field}"))
        .cloned()
        .unwrap_or_else(|| field.replace('_', " "))
}

fn fill(lang: Lang, key: &str, vars: &[(&str, &str)]) -> String {
    let mut out = lang.text(key);
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// A visibility or role name as the API writes it, in `lang`.
fn word(lang: Lang, api_word: &str) -> String {
    let w = api_word.trim().to_ascii_lowercase();
    for prefix in ["visibility_", "role_"] {
        if let Some(t) = lang.catalog().get(&format!("{prefix}{w}")) {
            return t.clone();
        }
    }
    api_word.to_string()
}

/// `problem` about `field` (the words after the field's name), in `lang`.
pub fn field_problem(lang: Lang, field: &str, problem: &str) -> Option<String> {
    let l = label(lang, field);
    let with = |key: &str, vars: &[(&str, &str)]| {
        let mut all = vec![("label", l.as_str())];
        all.extend_from_slice(vars);
        Some(fill(lang, key, &all))
    };
    let p = problem.trim();
    if p == "has already been taken" {
        return with("apierr_taken", &[]);
    }
    if p.starts_with("can't be blank")
        || p == "is missing"
        || p == "is empty"
        || p == "must not be empty"
    {
        return with("apierr_blank", &[]);
    }
    if p == "is invalid" || p == "does not have a valid value" {
        return with("apierr_invalid", &[]);
    }
    if let Some(n) = between(p, "is too short (minimum is ", " characters)") {
        return with("apierr_too_short", &[("n", n)]);
    }
    if let Some(n) = between(p, "is too long (maximum is ", " characters)") {
        return with("apierr_too_long", &[("n", n)]);
    }
    if p == "is longer than 255 characters" {
        return with("apierr_too_long", &[("n", "255")]);
    }
    // Path rules: `"-x" must start with a letter or digit (…)` and the like.
    for (tail, key) in [
        (
            " must start with a letter or digit (not '-', '_' or '.')",
            "apierr_path_start",
        ),
        (
            " must end with a letter or digit (not '-', '_' or '.')",
            "apierr_path_end",
        ),
        (
            " can only include non-accented letters, digits, '_', '-' and '.'",
            "apierr_path_chars",
        ),
        (
            " must not have two of '-', '_' or '.' in a row",
            "apierr_path_double",
        ),
        (" must not end with .git or .atom", "apierr_path_suffix"),
        (
            " is not a date of the form YYYY-MM-DD",
            "apierr_date_format",
        ),
    ] {
        if let Some(value) = p.strip_suffix(tail) {
            return with(key, &[("value", value)]);
        }
    }
    if p == "cannot be a date in the past or today" || p == "must be in the future" {
        return with("apierr_date_future", &[]);
    }
    if let Some(date) = p.strip_prefix("must be before ") {
        return with("apierr_date_before", &[("date", date)]);
    }
    if let Some(rest) = p.strip_prefix("should be greater than or equal to ") {
        let (role, group) = rest.split_once(" inherited membership from group ")?;
        return with(
            "apierr_below_inherited",
            &[("role", &word(lang, role)), ("group", group)],
        );
    }
    // Visibility: `private is not allowed since …`.
    let (v, why) = p.split_once(" is not allowed ")?;
    let v = word(lang, v);
    if let Some(parent) = between(why, "since the parent group has a ", " visibility.") {
        return with(
            "apierr_visibility_parent",
            &[("value", &v), ("parent", &word(lang, parent))],
        );
    }
    if why == "since there are sub-groups with higher visibility." {
        return with("apierr_visibility_subgroups", &[("value", &v)]);
    }
    if why == "since this group contains projects with higher visibility." {
        return with("apierr_visibility_projects", &[("value", &v)]);
    }
    if let Some(group) = between(why, "in a ", " group.") {
        return with(
            "apierr_visibility_group",
            &[("value", &v), ("parent", &word(lang, group))],
        );
    }
    None
}

/// A refusal that names no field, in `lang`.
pub fn form_problem(lang: Lang, problem: &str) -> Option<String> {
    let p = problem.trim();
    if p.starts_with("403 Forbidden") {
        return Some(lang.text("apierr_forbidden"));
    }
    if p.starts_with("404 ") {
        return Some(lang.text("apierr_not_found"));
    }
    if p == "Member already exists" {
        return Some(lang.text("member_exists"));
    }
    if p.ends_with("Token already revoked") {
        return Some(lang.text("apierr_token_revoked"));
    }
    if p.ends_with("Token already expired") {
        return Some(lang.text("apierr_token_expired"));
    }
    // `Username has already been taken`, `worker_capacity must be …`.
    if let Some(field) = p.strip_suffix(" has already been taken") {
        return field_problem(lang, &field.to_ascii_lowercase(), "has already been taken");
    }
    if let Some(field) = p.strip_suffix(" must be greater than or equal to 1") {
        return Some(fill(
            lang,
            "apierr_at_least_one",
            &[("label", &label(lang, field))],
        ));
    }
    None
}

/// The text between `prefix` and `suffix` of `s`.
fn between<'a>(s: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)?.strip_suffix(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;
    use crate::web::forms::field_errors_in;

    /// Every wording a self-service form can get from the API, as (field, problem).
    const FIELD_PROBLEMS: &[(&str, &str)] = &[
        ("path", "has already been taken"),
        ("username", "has already been taken"),
        ("name", "can't be blank"),
        ("name", "is missing"),
        ("scopes", "is empty"),
        ("path", "must not be empty"),
        ("email", "is invalid"),
        ("access_level", "does not have a valid value"),
        ("password", "is too short (minimum is 8 characters)"),
        ("path", "is longer than 255 characters"),
        (
            "path",
            "\"-team\" must start with a letter or digit (not '-', '_' or '.')",
        ),
        (
            "path",
            "\"team-\" must end with a letter or digit (not '-', '_' or '.')",
        ),
        (
            "path",
            "\"té\" can only include non-accented letters, digits, '_', '-' and '.'",
        ),
        (
            "path",
            "\"a--b\" must not have two of '-', '_' or '.' in a row",
        ),
        ("path", "\"x.git\" must not end with .git or .atom"),
        ("expires_at", "cannot be a date in the past or today"),
        ("expires_at", "must be in the future"),
        ("expires_at", "must be before 2027-12-06"),
        (
            "expires_at",
            "\"2026-13-01\" is not a date of the form YYYY-MM-DD",
        ),
        (
            "access_level",
            "should be greater than or equal to Maintainer inherited membership from group team",
        ),
        (
            "visibility",
            "public is not allowed since the parent group has a private visibility.",
        ),
        (
            "visibility",
            "private is not allowed since there are sub-groups with higher visibility.",
        ),
        (
            "visibility",
            "private is not allowed since this group contains projects with higher visibility.",
        ),
        ("visibility", "public is not allowed in a internal group."),
    ];

    const FORM_PROBLEMS: &[&str] = &[
        "403 Forbidden",
        "404 User Not Found",
        "Member already exists",
        "400 Bad request - Token already revoked",
        "400 Bad request - Token already expired",
        "Username has already been taken",
        "worker_capacity must be greater than or equal to 1",
    ];

    fn is_chinese_sentence(s: &str) -> bool {
        s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
            && !s.contains(['(', ')', ',', ';', '!', '?'])
            && (s.ends_with('。') || s.ends_with('）'))
    }

    #[test]
    fn every_known_refusal_is_translated() {
        for (field, problem) in FIELD_PROBLEMS {
            let zh = field_problem(Lang::ZhCn, field, problem)
                .unwrap_or_else(|| panic!("{field} {problem}: no translation"));
            assert!(is_chinese_sentence(&zh), "{field} {problem}: {zh}");
            assert!(!zh.contains('{'), "{zh}");
        }
        for problem in FORM_PROBLEMS {
            let zh = form_problem(Lang::ZhCn, problem)
                .unwrap_or_else(|| panic!("{problem}: no translation"));
            assert!(is_chinese_sentence(&zh), "{problem}: {zh}");
        }
    }

    #[test]
    fn what_varies_is_kept() {
        let zh = field_problem(
            Lang::ZhCn,
            "path",
            "\"-team\" must start with a letter or digit (not '-', '_' or '.')",
        )
        .unwrap();
        assert!(zh.starts_with("路径 \"-team\" "), "{zh}");
        let zh = field_problem(
            Lang::ZhCn,
            "access_level",
            "should be greater than or equal to Maintainer inherited membership from group team",
        )
        .unwrap();
        assert!(zh.contains("team") && zh.contains("维护者"), "{zh}");
        let zh = field_problem(Lang::ZhCn, "expires_at", "must be before 2027-12-06").unwrap();
        assert!(zh.contains("2027-12-06"), "{zh}");
    }

    #[test]
    fn forms_show_english_as_the_api_words_it_and_chinese_from_the_catalogue() {
        let e = ApiError::validation("password", "is too short (minimum is 8 characters)");
        assert_eq!(
            field_errors_in(&e, Lang::En)["password"],
            "Password is too short (minimum is 8 characters)"
        );
        assert_eq!(
            field_errors_in(&e, Lang::ZhCn)["password"],
            "密码太短（至少 8 个字符）。"
        );
        let e = ApiError::param("name is missing");
        assert_eq!(field_errors_in(&e, Lang::ZhCn)["name"], "名称不能为空。");
        let e = ApiError::forbidden();
        assert_eq!(
            field_errors_in(&e, Lang::ZhCn)["form"],
            Lang::ZhCn.text("apierr_forbidden")
        );
    }
}
