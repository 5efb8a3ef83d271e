//! Who is looking at a page: the signed-in user of a server-side session (or nobody),
//! the page language, and the CSRF token every form of this browser carries.
//!
//! The session cookie holds a random id; the database holds only its digest, so
//! signing out (deleting the row) revokes it everywhere. Cookies are HttpOnly and
//! SameSite=Lax, and Secure when the external URL is https. Anonymous browsers get a
//! CSRF cookie of their own (double submit) for the sign-in form.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use berth_meta::{User, UserState, WebSession};

use super::i18n::Lang;
use crate::api::Caller;
use crate::auth::{secrets, Principal, Via};
use crate::client_addr::ClientAddr;
use crate::state::{now_ms, Shared};

pub const SESSION_COOKIE: &str = "berth_session";
pub const CSRF_COOKIE: &str = "berth_csrf";
pub const LANG_COOKIE: &str = "berth_lang";
/// A week, renewed by signing in again.
pub const SESSION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

pub struct Viewer {
    /// The same caller the REST API would see for this user, so both decide alike.
    pub caller: Caller,
    pub user: Option<User>,
    /// Digest of the session id, when signed in.
    pub session: Option<String>,
    pub csrf: String,
    /// Cookies to set on the response.
    pub set_cookies: Vec<String>,
    pub lang: Lang,
    /// `http(s)://host[:port]`, as the REST API's links.
    pub base: String,
    /// The request's path and query, to come back to after signing in or switching language.
    pub here: String,
    pub secure: bool,
    /// The client's address, behind trusted proxies the one they forwarded.
    pub client_ip: String,
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value; `max_age` in seconds (0 deletes the cookie).
pub fn set_cookie(name: &str, value: &str, max_age: i64, http_only: bool, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Compare secrets without leaking where they differ through timing.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn anonymous() -> Caller {
    Caller {
        principal: Principal::Anonymous,
        admin: false,
    }
}

impl FromRequestParts<Shared> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let base = state.base_url(&parts.headers);
        let secure = state
            .settings
            .external_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let lang = cookie(&parts.headers, LANG_COOKIE)
            .and_then(|c| Lang::parse(&c))
            .or_else(|| {
                parts
                    .headers
                    .get("accept-language")
                    .and_then(|v| v.to_str().ok())
                    .and_then(Lang::from_accept_language)
            })
            .unwrap_or(Lang::En);
        let here = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let client_ip = ClientAddr::of(parts, &state.settings.trusted_proxies).to_string();
        let mut viewer = Viewer {
            caller: anonymous(),
            user: None,
            session: None,
            csrf: String::new(),
            set_cookies: Vec::new(),
            lang,
            base,
            here,
            secure,
            client_ip,
        };
        if let Some(id) = cookie(&parts.headers, SESSION_COOKIE) {
            let digest = secrets::digest(&id);
            match signed_in(state, &digest).await {
                Ok(Some((user, s))) => {
                    tracing::Span::current().record(
                        "principal",
                        format!("user {} (id {}) by web session", user.username, user.id),
                    );
                    viewer.caller = Caller {
                        admin: user.admin,
                        principal: Principal::User {
                            user: user.clone(),
                            via: Via::Password,
                        },
                    };
                    viewer.user = Some(user);
                    viewer.session = Some(digest);
                    viewer.csrf = s.csrf_token;
                }
                Ok(None) => {
                    // Expired or signed out elsewhere: forget the stale cookie.
                    viewer
                        .set_cookies
                        .push(set_cookie(SESSION_COOKIE, "", 0, true, secure));
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading a web session");
                    return Err(super::plain_error(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    ));
                }
            }
        }
        if viewer.session.is_none() {
            match cookie(&parts.headers, CSRF_COOKIE).filter(|c| c.len() >= 20) {
                Some(c) => viewer.csrf = c,
                None => {
                    viewer.csrf = secrets::generate("");
                    viewer.set_cookies.push(set_cookie(
                        CSRF_COOKIE,
                        &viewer.csrf,
                        86_400,
                        true,
                        secure,
                    ));
                }
            }
        }
        if viewer
            .user
            .as_ref()
            .is_some_and(|u| u.password_change_required)
            && !open_while_password_expired(parts.uri.path())
        {
            // A password someone else chose (an administrator's, or a generated one)
            // is only good for choosing one's own: every other page waits for that.
            let to = format!("{PASSWORD_FORM}?notice=password_required");
            return Err(viewer.finish(axum::response::Redirect::to(&to).into_response()));
        }
        Ok(viewer)
    }
}

/// Where a user whose password must be changed is sent, whatever they asked for.
pub const PASSWORD_FORM: &str = "/-/user_settings/password/edit";

/// The pages a user whose password must be changed may still reach: the password
/// form and what it posts to, signing out, switching language, the static files.
pub fn open_while_password_expired(path: &str) -> bool {
    matches!(
        path,
        PASSWORD_FORM | "/-/user_settings/password" | "/users/sign_out" | "/-/lang"
    ) || path.starts_with("/-/static/")
}

async fn signed_in(
    state: &Shared,
    digest: &str,
) -> Result<Option<(User, WebSession)>, berth_meta::MetaError> {
    let Some(s) = state.meta.web_session(digest, now_ms()).await? else {
        return Ok(None);
    };
    Ok(match state.meta.user(s.user_id).await? {
        Some(u) if u.state == UserState::Active => Some((u, s)),
        _ => None,
    })
}

impl Viewer {
    /// Whether a state-changing request is this browser's own: the form's token
    /// matches, and the `Origin` (when the browser sends one) is this instance.
    pub fn csrf_ok(&self, method: &Method, headers: &HeaderMap, token: Option<&str>) -> bool {
        if method == Method::GET || method == Method::HEAD {
            return true;
        }
        if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) {
            if origin.trim_end_matches('/') != self.base {
                tracing::info!(origin, "form refused: posted from another origin");
                return false;
            }
        }
        let ok = token.is_some_and(|t| !self.csrf.is_empty() && same_secret(t, &self.csrf));
        if !ok {
            tracing::info!("form refused: missing or wrong CSRF token");
        }
        ok
    }

    /// Add this viewer's pending cookies to `resp`.
    pub fn finish(&self, mut resp: Response) -> Response {
        for c in &self.set_cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                resp.headers_mut().append("set-cookie", v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_and_written() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("a=1; berth_lang=zh-CN; b=2"),
        );
        assert_eq!(cookie(&h, "berth_lang").as_deref(), Some("zh-CN"));
        assert_eq!(cookie(&h, "missing"), None);
        let c = set_cookie("s", "v", 10, true, true);
        assert_eq!(c, "s=v; Path=/; Max-Age=10; SameSite=Lax; HttpOnly; Secure");
        assert!(!set_cookie("s", "v", 10, false, false).contains("Secure"));
    }

    #[test]
    fn an_expired_password_opens_only_its_own_form() {
        for open in [
            "/-/user_settings/password/edit",
            "/-/user_settings/password",
            "/users/sign_out",
            "/-/lang",
            "/-/static/berth.css",
        ] {
            assert!(open_while_password_expired(open), "{open}");
        }
        for closed in [
            "/",
            "/admin",
            "/-/user_settings/profile",
            "/-/user_settings/personal_access_tokens",
            "/-/user_settings/password/edit/x",
            "/g/p/container_registry",
            "/projects/new",
        ] {
            assert!(!open_while_password_expired(closed), "{closed}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
