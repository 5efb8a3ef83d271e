//! GitLab's offset pagination: `page` (default 1) and `per_page` (default 20, at most
//! 100) in; `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Prev-Page` (empty when there is
//! none), `X-Total`, `X-Total-Pages` and a `Link` header with absolute `prev`, `next`,
//! `first` and `last` URLs that keep every other query parameter, out (lists counted
//! only up to [`COUNT_LIMIT`] leave the total and `last` out beyond it). python-gitlab
//! follows `rel="next"` verbatim, so the links are built from the external URL.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_meta::Window;
use serde::Serialize;

use super::{ApiError, ApiResult, Params};
use crate::state::Shared;

pub const DEFAULT_PER_PAGE: i64 = 20;
pub const MAX_PER_PAGE: i64 = 100;
/// GitLab leaves `x-total`, `x-total-pages` and the `last` link out of a list of more
/// records than this: counting them all is what would cost.
pub const COUNT_LIMIT: i64 = 10_000;

#[derive(Debug, Clone)]
pub struct Pagination {
    pub page: i64,
    pub per_page: i64,
    /// `<external base><path>` of the request, for the `Link` header.
    url: String,
    /// The request's query parameters other than `page` and `per_page`, in order.
    query: Vec<(String, String)>,
}

impl Pagination {
    /// Read `page` and `per_page` from a query string; `url` is the absolute URL of
    /// the request without its query.
    pub fn new(url: String, query: &str) -> ApiResult<Pagination> {
        let mut page = 1;
        let mut per_page = DEFAULT_PER_PAGE;
        let mut rest = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "page" => {
                    page = v
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| ApiError::param("page is invalid"))?
                        .max(1)
                }
                "per_page" => {
                    let n = v
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| ApiError::param("per_page is invalid"))?;
                    per_page = if n < 1 {
                        DEFAULT_PER_PAGE
                    } else {
                        n.min(MAX_PER_PAGE)
                    };
                }
                _ => rest.push((k.into_owned(), v.into_owned())),
            }
        }
        Ok(Pagination {
            page,
            per_page,
            url,
            query: rest,
        })
    }

    /// The window to ask the metadata store for.
    pub fn window(&self) -> Window {
        Window {
            offset: (self.page - 1).saturating_mul(self.per_page),
            limit: self.per_page,
        }
    }

    /// This page of `items` (an already filtered and sorted list) and the total count.
    pub fn slice<T>(&self, items: Vec<T>) -> (Vec<T>, i64) {
        let total = items.len() as i64;
        let w = self.window();
        let page = items
            .into_iter()
            .skip(w.offset.max(0) as usize)
            .take(w.limit.max(0) as usize)
            .collect();
        (page, total)
    }

    fn link(&self, page: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.query {
            q.append_pair(k, v);
        }
        q.append_pair("page", &page.to_string());
        q.append_pair("per_page", &self.per_page.to_string());
        format!("{}?{}", self.url, q.finish())
    }

    /// The pagination headers for a list of `total` items.
    pub fn headers(&self, total: i64) -> Vec<(&'static str, String)> {
        self.headers_for(Some(total), false)
    }

    /// The pagination headers for a list of `total` items or, when that is unknown
    /// (`None`), one that goes on past this page when `more`: then, as GitLab beyond
    /// [`COUNT_LIMIT`] records, without `x-total`, `x-total-pages` and the `last` link.
    fn headers_for(&self, total: Option<i64>, more: bool) -> Vec<(&'static str, String)> {
        // Saturating: `total` is a count, but this must not be what overflows.
        let total_pages =
            total.map(|t| (t.saturating_add(self.per_page - 1) / self.per_page).max(1));
        // Lazily: `page` may be i64::MAX, whose successor does not exist.
        let next = match total_pages {
            Some(pages) => (self.page < pages).then(|| self.page + 1),
            None => more.then(|| self.page.checked_add(1)).flatten(),
        };
        let prev = (self.page > 1).then(|| (self.page - 1).min(total_pages.unwrap_or(i64::MAX)));
        let mut links = Vec::new();
        if let Some(p) = prev {
            links.push(format!("<{}>; rel=\"prev\"", self.link(p)));
        }
        if let Some(n) = next {
            links.push(format!("<{}>; rel=\"next\"", self.link(n)));
        }
        links.push(format!("<{}>; rel=\"first\"", self.link(1)));
        if let Some(pages) = total_pages {
            links.push(format!("<{}>; rel=\"last\"", self.link(pages)));
        }
        let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        let mut headers = vec![
            ("x-page", self.page.to_string()),
            ("x-per-page", self.per_page.to_string()),
            ("x-next-page", opt(next)),
            ("x-prev-page", opt(prev)),
        ];
        if let (Some(total), Some(pages)) = (total, total_pages) {
            headers.push(("x-total", total.to_string()));
            headers.push(("x-total-pages", pages.to_string()));
        }
        headers.push(("link", links.join(", ")));
        headers
    }

    /// The window to ask for when the total is counted only up to [`COUNT_LIMIT`] + 1:
    /// this page and one item more, which tells whether a next page exists.
    pub fn window_and_one(&self) -> Window {
        let w = self.window();
        Window {
            limit: w.limit + 1,
            ..w
        }
    }

    /// A 200 response with this page of a list counted up to [`COUNT_LIMIT`] + 1
    /// (`total`), `items` as [`Pagination::window_and_one`] asked for them (the one
    /// past the page is not sent). Beyond the limit the total is left out, as GitLab does.
    pub fn respond_counted<T: Serialize>(&self, total: i64, mut items: Vec<T>) -> Response {
        let more = items.len() as i64 > self.per_page;
        items.truncate(self.per_page.max(0) as usize);
        let total = (total <= COUNT_LIMIT).then_some(total);
        self.with_headers(self.headers_for(total, more), Json(items).into_response())
    }

    fn with_headers(&self, headers: Vec<(&'static str, String)>, mut resp: Response) -> Response {
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(HeaderName::from_static(name), v);
            }
        }
        resp
    }

    /// A 200 response with `body` (one page) and the headers for `total` items.
    pub fn respond<T: Serialize>(&self, total: i64, body: T) -> Response {
        self.with_headers(self.headers(total), Json(body).into_response())
    }
}

/// GitLab's keyset pagination of a repository's tags (`pagination=keyset`): ordered
/// by name only, `sort` `asc` or `desc`, starting after the tag named `last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    pub descending: bool,
    pub last: Option<String>,
}

impl Keyset {
    /// Whether the request asks for keyset pagination at all.
    pub fn requested(params: &Params) -> ApiResult<bool> {
        Ok(params.string("pagination")?.as_deref() == Some("keyset"))
    }

    /// The keyset parameters of a request that asked for them.
    pub fn from_params(params: &Params) -> ApiResult<Keyset> {
        if params.string("order_by")?.is_some_and(|o| o != "name") {
            return Err(ApiError::param("order_by does not have a valid value"));
        }
        let descending = match params.string("sort")?.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(ApiError::param("sort does not have a valid value")),
        };
        let last = params.string("last")?.filter(|l| !l.is_empty());
        Ok(Keyset { descending, last })
    }
}

impl FromRequestParts<Shared> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> ApiResult<Self> {
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let url = format!("{}{}", state.base_url(&parts.headers), uri.path());
        Pagination::new(url, uri.query().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> &'a str {
        h.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn middle_page_links_keep_the_query() {
        let p = Pagination::new(
            "http://h:5000/api/v4/projects".into(),
            "search=a%20b&page=2&per_page=10&x[]=1",
        )
        .unwrap();
        assert_eq!(p.window().offset, 10);
        let h = p.headers(35);
        assert_eq!(header(&h, "x-page"), "2");
        assert_eq!(header(&h, "x-next-page"), "3");
        assert_eq!(header(&h, "x-prev-page"), "1");
        assert_eq!(header(&h, "x-total"), "35");
        assert_eq!(header(&h, "x-total-pages"), "4");
        let link = header(&h, "link");
        assert!(link.contains(
            "<http://h:5000/api/v4/projects?search=a+b&x%5B%5D=1&page=3&per_page=10>; rel=\"next\""
        ));
        assert!(link.contains("page=1&per_page=10>; rel=\"prev\""));
        assert!(link.contains("page=4&per_page=10>; rel=\"last\""));
    }

    #[test]
    fn beyond_the_count_limit_the_total_and_last_link_are_left_out() {
        let p = Pagination::new("http://h/api/v4/groups/1/x".into(), "page=3&per_page=2").unwrap();
        assert_eq!(
            (p.window_and_one().offset, p.window_and_one().limit),
            (4, 3)
        );
        // Counted in full: the usual headers, and the extra item is not sent.
        let r = p.respond_counted(7, vec![1, 2, 3]);
        let h = r.headers();
        assert_eq!(h["x-total"], "7");
        assert_eq!(h["x-total-pages"], "4");
        assert_eq!(h["x-next-page"], "4");
        assert!(h["link"].to_str().unwrap().contains("rel=\"last\""));
        // Beyond the limit: no total, no last page; next only while items remain.
        let r = p.respond_counted(COUNT_LIMIT + 1, vec![1, 2, 3]);
        let h = r.headers();
        assert!(h.get("x-total").is_none() && h.get("x-total-pages").is_none());
        assert_eq!(h["x-next-page"], "4");
        assert_eq!(h["x-prev-page"], "2");
        let link = h["link"].to_str().unwrap();
        assert!(link.contains("page=4&per_page=2>; rel=\"next\""), "{link}");
        assert!(!link.contains("rel=\"last\""), "{link}");
        let r = p.respond_counted(COUNT_LIMIT + 1, vec![1]);
        assert_eq!(r.headers()["x-next-page"], "");
        assert!(!r.headers()["link"]
            .to_str()
            .unwrap()
            .contains("rel=\"next\""));
    }

    #[test]
    fn bounds() {
        let p = Pagination::new("u".into(), "per_page=1000&page=0").unwrap();
        assert_eq!((p.page, p.per_page), (1, MAX_PER_PAGE));
        let h = p.headers(0);
        assert_eq!(header(&h, "x-next-page"), "");
        assert_eq!(header(&h, "x-prev-page"), "");
        assert_eq!(header(&h, "x-total-pages"), "1");
        assert!(Pagination::new("u".into(), "page=x").is_err());
        // The last possible page has no next one (and no overflow computing it).
        let last = Pagination::new("u".into(), "page=9223372036854775807").unwrap();
        assert_eq!(header(&last.headers(3), "x-next-page"), "");
        assert_eq!(header(&last.headers(3), "x-prev-page"), "1");
        // A total near i64::MAX has pages, not an overflow.
        let huge = Pagination::new("u".into(), "per_page=100").unwrap();
        assert_eq!(
            header(&huge.headers(i64::MAX), "x-total-pages"),
            (i64::MAX / 100).to_string()
        );
        let (items, total) = Pagination::new("u".into(), "per_page=2&page=2")
            .unwrap()
            .slice(vec![1, 2, 3, 4, 5]);
        assert_eq!((items, total), (vec![3, 4], 5));
    }
}
