//! What every self-service page does with a form: check it is this browser's own
//! (CSRF), require a signed-in viewer, read the fields into the same `Params` the REST
//! API reads, and show the API's refusal next to the field it names.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use berth_meta::User;

use super::api_errors;
use super::i18n::Lang;
use super::session::{cookie, set_cookie};
use super::{field, form_fields, Viewer};
use crate::api::{ApiError, Params};

/// A posted form whose CSRF token matched.
pub(crate) struct Posted {
    pub fields: Vec<(String, String)>,
    /// The fields as the REST API reads a form body (`scopes[]` as a list …).
    pub params: Params,
}

impl Posted {
    pub fn get(&self, name: &str) -> &str {
        field(&self.fields, name).unwrap_or("")
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Viewer {
    /// The `notice=` a page was redirected to after a form (letters and `_` only).
    pub(crate) fn notice(&self) -> Option<String> {
        self.here.split_once("notice=").map(|(_, n)| {
            n.chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
    }

    /// The signed-in user, or (for anonymous viewers) a redirect to sign in.
    pub(crate) fn signed_in(&self) -> Result<&User, Response> {
        self.user.as_ref().ok_or_else(|| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("redirect_to", &self.here);
            self.redirect(&format!("/users/sign_in?{}", q.finish()))
        })
    }

    /// The posted form of a signed-in viewer: [`Viewer::signed_in`], then
    /// [`Viewer::posted`].
    pub(crate) fn signed_in_post(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Posted, Response> {
        self.signed_in()?;
        self.posted(method, headers, body)
    }

    /// The posted form, if it carries this browser's CSRF token.
    pub(crate) fn posted(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Posted, Response> {
        let fields = form_fields(body);
        if !self.csrf_ok(method, headers, field(&fields, "csrf_token")) {
            return Err(self.error(StatusCode::FORBIDDEN));
        }
        // Blank optional fields are left out, as a script would leave them out.
        let kept: Vec<u8> = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &fields {
                if k != "csrf_token" && !v.trim().is_empty() {
                    q.append_pair(k, v);
                }
            }
            q.finish().into_bytes()
        };
        let params = Params::parse("", "application/x-www-form-urlencoded", &kept)
            .map_err(|e| self.error(e.status()))?;
        Ok(Posted { fields, params })
    }
}

/// Carries a secret just created (a token) from the form's POST to the page it
/// redirects to, so that a reload shows the page again instead of posting the form
/// again (and creating another token). HttpOnly, a minute long, read once.
const SECRET_COOKIE: &str = "berth_new_secret";

impl Viewer {
    /// Redirect to `to` with the secret of `kind` token `id` for it to show once.
    pub(crate) fn redirect_with_secret(
        &self,
        to: &str,
        kind: &str,
        id: i64,
        secret: &str,
    ) -> Response {
        let mut resp = self.redirect(to);
        let value = format!("{kind}.{id}.{secret}");
        if let Ok(v) = axum::http::HeaderValue::from_str(&set_cookie(
            SECRET_COOKIE,
            &value,
            60,
            true,
            self.secure,
        )) {
            resp.headers_mut().append(axum::http::header::SET_COOKIE, v);
        }
        resp
    }

    /// The secret of a `kind` token carried here by [`Viewer::redirect_with_secret`],
    /// with the token's id; the cookie is cleared with this response.
    pub(crate) fn take_secret(&mut self, headers: &HeaderMap, kind: &str) -> Option<(i64, String)> {
        let value = cookie(headers, SECRET_COOKIE)?;
        self.set_cookies
            .push(set_cookie(SECRET_COOKIE, "", 0, true, self.secure));
        let mut parts = value.splitn(3, '.');
        if parts.next()? != kind {
            return None;
        }
        let id = parts.next()?.parse().ok()?;
        let secret = parts.next()?;
        // Only what this server hands out: a prefix and URL-safe characters.
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .then(|| (id, secret.to_string()))
    }
}

/// The problems of a refusal by field (`form` for those that name none), the way the
/// REST API words them: `{"message": {"path": ["…"]}}` and Grape's `"name is missing"`
/// both land next to their field. In the page's language: English as the API words
/// it, Chinese from the catalogue (`apierr_*`), the API's wording where no entry fits.
pub(crate) fn field_errors_in(e: &ApiError, lang: Lang) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, rest) in problems_by_field(e) {
        let text = match (lang, &rest) {
            (Lang::En, Problem::Field(rest)) => format!("{} {rest}", label(&key)),
            (Lang::En, Problem::Form(p)) => p.clone(),
            (_, Problem::Field(rest)) => api_errors::field_problem(lang, &key, rest)
                .unwrap_or_else(|| format!("{} {rest}", label(&key))),
            (_, Problem::Form(p)) => api_errors::form_problem(lang, p).unwrap_or_else(|| p.clone()),
        };
        out.entry(key)
            .and_modify(|t: &mut String| {
                if lang == Lang::En {
                    t.push(' ');
                }
                t.push_str(&text)
            })
            .or_insert(text);
    }
    out
}

/// What a refusal says: about a field (the text after the field's name) or the
/// whole form.
enum Problem {
    Field(String),
    Form(String),
}

fn problems_by_field(e: &ApiError) -> Vec<(String, Problem)> {
    e.problems()
        .into_iter()
        .map(|(f, problem)| match f {
            Some(f) => {
                let f = if f == "visibility_level" {
                    "visibility".to_string()
                } else {
                    f
                };
                // `path: path "-x" must …` names its field already.
                let rest = problem
                    .strip_prefix(&format!("{f} "))
                    .map(str::to_string)
                    .unwrap_or(problem);
                (f, Problem::Field(rest))
            }
            None => match problem.split_once(' ') {
                Some((word, rest))
                    if word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        && ["is ", "does ", "are "].iter().any(|v| rest.starts_with(v)) =>
                {
                    (word.to_string(), Problem::Field(rest.to_string()))
                }
                _ => ("form".to_string(), Problem::Form(problem)),
            },
        })
        .collect()
}

/// `expires_at` → `Expires at`, as GitLab prefixes its model errors.
fn label(field: &str) -> String {
    let spaced = field.replace('_', " ");
    let mut c = spaced.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => spaced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_land_next_to_their_field() {
        let e = ApiError::validation("path", "has already been taken");
        assert_eq!(
            field_errors_in(&e, Lang::En)
                .get("path")
                .map(String::as_str),
            Some("Path has already been taken")
        );
        let e = ApiError::param("name is missing");
        assert_eq!(
            field_errors_in(&e, Lang::En)
                .get("name")
                .map(String::as_str),
            Some("Name is missing")
        );
        let e = ApiError::forbidden();
        assert_eq!(
            field_errors_in(&e, Lang::En)
                .get("form")
                .map(String::as_str),
            Some("403 Forbidden")
        );
    }
}
