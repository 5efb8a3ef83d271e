//! Request parameters the way GitLab (Grape) reads them: the query string merged with
//! a JSON or form-encoded body, into one map; typed accessors answer Grape's errors
//! (`{"error": "<name> is missing"}`, `"… is invalid"`, `"… does not have a valid
//! value"`). python-gitlab sends JSON (with `Content-Type: application/json` even on
//! GET and DELETE, usually with no body), curl users send forms and query strings;
//! booleans arrive as `true`, `True`, `"true"` or `1`.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

use super::{ApiError, ApiResult};

#[derive(Debug, Clone, Default)]
pub struct Params {
    map: Map<String, Value>,
}

/// Add `key=value` from a query string or form to `map`: `k[]=v` and repeated keys
/// make arrays, `k[sub]=v` a nested object.
fn insert_pair(map: &mut Map<String, Value>, key: &str, value: String) {
    if let Some(base) = key.strip_suffix("[]") {
        match map.get_mut(base) {
            Some(Value::Array(a)) => a.push(Value::String(value)),
            _ => {
                map.insert(base.to_string(), Value::Array(vec![Value::String(value)]));
            }
        }
        return;
    }
    if let Some((base, rest)) = key.split_once('[') {
        if let Some(sub) = rest.strip_suffix(']') {
            let entry = map
                .entry(base.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = entry {
                o.insert(sub.to_string(), Value::String(value));
            }
            return;
        }
    }
    match map.get_mut(key) {
        Some(Value::Array(a)) => a.push(Value::String(value)),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, Value::String(value)]);
        }
        None => {
            map.insert(key.to_string(), Value::String(value));
        }
    }
}

fn parse_form(map: &mut Map<String, Value>, data: &[u8]) {
    for (k, v) in form_urlencoded::parse(data) {
        insert_pair(map, &k, v.into_owned());
    }
}

impl Params {
    /// Parameters from a query string and a body of the given content type.
    pub fn parse(query: &str, content_type: &str, body: &[u8]) -> ApiResult<Params> {
        let mut map = Map::new();
        parse_form(&mut map, query.as_bytes());
        let body_is_blank = body.iter().all(|b| b.is_ascii_whitespace());
        if !body_is_blank {
            let ct = content_type.to_ascii_lowercase();
            if ct.starts_with("application/x-www-form-urlencoded") {
                let mut form = Map::new();
                parse_form(&mut form, body);
                map.extend(form);
            } else {
                // JSON is the default: python-gitlab and most scripts send it.
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(o)) => map.extend(o),
                    Ok(_) => return Err(ApiError::param("the request body must be a JSON object")),
                    Err(e) if ct.contains("json") || ct.is_empty() => {
                        return Err(ApiError::param(format!(
                            "the request body is not valid JSON: {e}"
                        )))
                    }
                    Err(_) => {
                        return Err(ApiError::param(format!(
                            "unsupported Content-Type {content_type:?}; send JSON or a form"
                        )))
                    }
                }
            }
        }
        Ok(Params { map })
    }

    /// A nested object (`{"k": {...}}` in JSON, `k[sub]=v` in forms) as parameters.
    pub fn nested(&self, key: &str) -> ApiResult<Option<Params>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(Params { map: o.clone() })),
            Some(_) => Err(ApiError::param(format!("{key} is invalid"))),
        }
    }

    /// Set a string parameter (for handlers that reuse a lookup with another name).
    pub fn set(&mut self, key: &str, value: &str) {
        self.map
            .insert(key.to_string(), Value::String(value.to_string()));
    }

    /// A present, non-null parameter.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether the key was sent at all, `null` included (`null` clears a field).
    pub fn given(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// A scalar as text (numbers and booleans are written out).
    pub fn string(&self, key: &str) -> ApiResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(ApiError::param(format!("{key} is invalid"))),
        }
    }

    /// A required, non-blank string.
    pub fn required_string(&self, key: &str) -> ApiResult<String> {
        match self.string(key)? {
            None => Err(ApiError::param(format!("{key} is missing"))),
            Some(s) if s.trim().is_empty() => Err(ApiError::param(format!("{key} is empty"))),
            Some(s) => Ok(s),
        }
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        let invalid = || ApiError::param(format!("{key} is invalid"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    pub fn required_int(&self, key: &str) -> ApiResult<i64> {
        self.int(key)?
            .ok_or_else(|| ApiError::param(format!("{key} is missing")))
    }

    /// A boolean in any of the spellings clients send.
    pub fn bool(&self, key: &str) -> ApiResult<Option<bool>> {
        let invalid = || ApiError::param(format!("{key} is invalid"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(1) => Ok(Some(true)),
                Some(0) => Ok(Some(false)),
                _ => Err(invalid()),
            },
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "y" | "on" => Ok(Some(true)),
                "false" | "f" | "0" | "no" | "n" | "off" => Ok(Some(false)),
                "" => Ok(None),
                _ => Err(invalid()),
            },
            Some(_) => Err(invalid()),
        }
    }

    /// A list: a JSON array, repeated `key[]=` values, or one comma-separated string.
    pub fn list(&self, key: &str) -> ApiResult<Option<Vec<String>>> {
        let invalid = || ApiError::param(format!("{key} is invalid"));
        let items: Vec<String> = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(invalid()),
                })
                .collect::<ApiResult<_>>()?,
            Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
            Some(_) => return Err(invalid()),
        };
        Ok(Some(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }

    /// A value from a fixed set (parsed with `FromStr`); anything else is Grape's
    /// `<key> does not have a valid value`.
    pub fn choice<T: FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| ApiError::param(format!("{key} does not have a valid value"))),
        }
    }

    /// A `YYYY-MM-DD` date (a longer ISO-8601 timestamp is cut to its day).
    pub fn date(&self, key: &str) -> ApiResult<Option<String>> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => crate::org::check_date(key, s.trim())
                .map(Some)
                .map_err(|_| ApiError::param(format!("{key} is invalid"))),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let query = req.uri().query().unwrap_or("").to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::param(format!("the request body could not be read: {e}")))?;
        Params::parse(&query, &content_type, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_form_and_json_merge() {
        let p = Params::parse(
            "a=1&scopes[]=api&scopes[]=read_api&x[k]=v",
            "application/json",
            br#"{"name": "n", "flag": "True", "n": 5}"#,
        )
        .unwrap();
        assert_eq!(p.string("a").unwrap().as_deref(), Some("1"));
        assert_eq!(
            p.list("scopes").unwrap().unwrap(),
            vec!["api".to_string(), "read_api".to_string()]
        );
        assert_eq!(p.required_string("name").unwrap(), "n");
        assert_eq!(p.bool("flag").unwrap(), Some(true));
        assert_eq!(p.int("n").unwrap(), Some(5));
        assert_eq!(p.int("a").unwrap(), Some(1));
        assert!(p.has("x"));

        let form = Params::parse(
            "",
            "application/x-www-form-urlencoded",
            b"name=a+b&admin=1&scopes=api,read_api",
        )
        .unwrap();
        assert_eq!(form.string("name").unwrap().as_deref(), Some("a b"));
        assert_eq!(form.bool("admin").unwrap(), Some(true));
        assert_eq!(form.list("scopes").unwrap().unwrap().len(), 2);
    }

    #[test]
    fn grape_errors() {
        let p = Params::parse("n=x&b=maybe&v=loud&e=", "application/json", b"").unwrap();
        let err = |r: ApiError| r.body_json();
        assert_eq!(
            err(p.required_string("name").unwrap_err()),
            serde_json::json!({"error": "name is missing"})
        );
        assert_eq!(
            err(p.required_string("e").unwrap_err()),
            serde_json::json!({"error": "e is empty"})
        );
        assert_eq!(
            err(p.int("n").unwrap_err()),
            serde_json::json!({"error": "n is invalid"})
        );
        assert!(p.bool("b").is_err());
        assert_eq!(
            err(p.choice::<berth_core::Visibility>("v").unwrap_err()),
            serde_json::json!({"error": "v does not have a valid value"})
        );
        assert!(Params::parse("", "application/json", b"[1]").is_err());
        assert!(Params::parse("", "application/json", b"{bad").is_err());
    }

    /// Fuzz properties of every REST parameter reader: the query/body merge, the typed
    /// accessors, offset pagination (and its `Link` round trip), the keyset and
    /// bulk-delete parameters and the cleanup-policy attributes.
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::api::pagination::{Keyset, Pagination, MAX_PER_PAGE};
        use crate::registry::fuzz::check;

        const KEYS: [&str; 16] = [
            "page",
            "per_page",
            "pagination",
            "last",
            "sort",
            "order_by",
            "search",
            "name",
            "enabled",
            "keep_n",
            "older_than",
            "cadence",
            "name_regex",
            "name_regex_keep",
            "name_regex_delete",
            "x[]",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(vec![
                    "", "1", "0", "-1", "true", "True", " yes ", "off", "maybe", "asc", "desc",
                    "keyset", "name", ".*", "(", "v.+", "7d", "90d", "1month", "null", "[]", "{}",
                    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e3",
                    "2026-01-02", "2026-13-45", "2026-02-30T00:00:00Z", "+5",
                ]).prop_map(String::from),
                2 => any::<i64>().prop_map(|n| n.to_string()),
                2 => "[a-zA-Z0-9 %+.*()\\[\\]|-]{0,12}",
                1 => any::<String>(),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => prop::sample::select(KEYS.to_vec()).prop_map(String::from),
                1 => "[a-z_\\[\\]]{0,8}",
                1 => any::<String>(),
            ]
        }

        fn query() -> impl Strategy<Value = String> {
            prop::collection::vec((key(), value()), 0..6).prop_map(|kv| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for (k, v) in kv {
                    q.append_pair(&k, &v);
                }
                q.finish()
            })
        }

        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                value().prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(2, 12, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(key(), inner, 0..4)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// A request: query, Content-Type and body, from near-valid to garbage.
        fn request() -> impl Strategy<Value = (String, String, Vec<u8>)> {
            let body = prop_oneof![
                3 => prop::collection::btree_map(key(), json(), 0..6)
                    .prop_map(|m| serde_json::to_vec(&m).unwrap()),
                1 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
                2 => query().prop_map(String::into_bytes),
                1 => prop::collection::vec(any::<u8>(), 0..64),
                1 => (1usize..2000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
            ];
            let content_type = prop::sample::select(vec![
                "",
                "application/json",
                "application/json; charset=utf-8",
                "application/x-www-form-urlencoded",
                "APPLICATION/X-WWW-FORM-URLENCODED; x=y",
                "text/plain",
                "multipart/form-data",
            ])
            .prop_map(String::from);
            (query(), content_type, body)
        }

        /// Every refusal is Grape's `{"error": …}` or GitLab's `{"message": …}`, a 400.
        fn refusal_shape(e: &ApiError) -> Result<(), TestCaseError> {
            prop_assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
            let body = e.body_json();
            prop_assert!(
                body.get("error").is_some() || body.get("message").is_some(),
                "{}",
                body
            );
            Ok(())
        }

        #[test]
        fn fuzz_params_and_accessors() {
            check("REST params", (request(), key()), |((q, ct, body), k)| {
                let p = match Params::parse(&q, &ct, &body) {
                    Ok(p) => p,
                    Err(e) => return refusal_shape(&e),
                };
                for key in KEYS.iter().copied().chain([k.as_str()]) {
                    let results = [
                        p.string(key).map(|_| ()),
                        p.required_string(key).map(|_| ()),
                        p.int(key).map(|_| ()),
                        p.bool(key).map(|_| ()),
                        p.list(key).map(|_| ()),
                        p.choice::<berth_core::Visibility>(key).map(|_| ()),
                        p.date(key).map(|_| ()),
                        p.nested(key).map(|_| ()),
                    ];
                    for r in &results {
                        if let Err(e) = r {
                            refusal_shape(e)?;
                        }
                    }
                    if let Ok(Some(dates)) = p.date(key) {
                        prop_assert_eq!(dates.len(), 10);
                    }
                }
                Ok(())
            });
        }

        #[test]
        fn fuzz_typed_values_round_trip() {
            let spellings = prop_oneof![
                Just(("true", true)),
                Just(("T", true)),
                Just((" yes", true)),
                Just(("1", true)),
                Just(("On", true)),
                Just(("false", false)),
                Just(("F", false)),
                Just(("no ", false)),
                Just(("0", false)),
                Just(("OFF", false)),
            ];
            let input = (any::<i64>(), spellings, any::<bool>(), "\\PC{0,20}");
            check(
                "REST typed values",
                input,
                |(n, (spelled, b), as_json, text)| {
                    let p = if as_json {
                        let body = serde_json::json!({"n": n, "b": spelled, "s": text, "jb": b});
                        Params::parse("", "application/json", body.to_string().as_bytes())
                    } else {
                        let mut q = form_urlencoded::Serializer::new(String::new());
                        q.append_pair("n", &n.to_string());
                        q.append_pair("b", spelled);
                        q.append_pair("s", &text);
                        q.append_pair("jb", &b.to_string());
                        Params::parse(&q.finish(), "", b"")
                    }
                    .unwrap();
                    prop_assert_eq!(p.int("n").unwrap(), Some(n));
                    prop_assert_eq!(p.bool("b").unwrap(), Some(b));
                    prop_assert_eq!(p.bool("jb").unwrap(), Some(b));
                    prop_assert_eq!(p.string("s").unwrap(), Some(text.clone()));
                    Ok(())
                },
            );
        }

        #[test]
        fn fuzz_pagination_bounds_and_links_round_trip() {
            let pages = prop_oneof![
                3 => (0i64..30).prop_map(|n| n.to_string()),
                1 => any::<i64>().prop_map(|n| n.to_string()),
                1 => value(),
            ];
            let totals = prop_oneof![0i64..500, any::<i64>()];
            check(
                "pagination",
                (query(), pages.clone(), pages, totals),
                |(rest, page, per_page, total)| {
                    let mut q = form_urlencoded::Serializer::new(rest.clone());
                    q.append_pair("page", &page)
                        .append_pair("per_page", &per_page);
                    let p = match Pagination::new("http://h/api/v4/x".into(), &q.finish()) {
                        Ok(p) => p,
                        Err(e) => return refusal_shape(&e),
                    };
                    prop_assert!(p.page >= 1);
                    prop_assert!((1..=MAX_PER_PAGE).contains(&p.per_page));
                    let w = p.window();
                    prop_assert!(w.offset >= 0 && w.limit == p.per_page);
                    let total = total.max(0);
                    let headers = p.headers(total);
                    let get = |n: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| *k == n)
                            .map(|(_, v)| v.clone())
                            .unwrap()
                    };
                    let pages: i64 = get("x-total-pages").parse().unwrap();
                    prop_assert!(pages >= 1);
                    // Every link parses back to the page it names, with the same
                    // per_page and the other parameters unchanged.
                    let link = get("link");
                    for part in link.split(", ") {
                        let url = part.trim_start_matches('<').split('>').next().unwrap();
                        let query = url.split_once('?').map(|x| x.1).unwrap_or("");
                        let back = Pagination::new("http://h/api/v4/x".into(), query).unwrap();
                        prop_assert_eq!(back.per_page, p.per_page);
                        let others: Vec<(String, String)> =
                            form_urlencoded::parse(query.as_bytes())
                                .into_owned()
                                .filter(|(k, _)| k != "page" && k != "per_page")
                                .collect();
                        let sent: Vec<(String, String)> = form_urlencoded::parse(rest.as_bytes())
                            .into_owned()
                            .filter(|(k, _)| k != "page" && k != "per_page")
                            .collect();
                        prop_assert_eq!(others, sent);
                        if part.ends_with("rel=\"next\"") {
                            prop_assert_eq!(back.page, p.page + 1);
                            prop_assert!(back.page <= pages);
                        }
                        if part.ends_with("rel=\"last\"") {
                            prop_assert_eq!(back.page, pages);
                        }
                    }
                    Ok(())
                },
            );
        }

        #[test]
        fn fuzz_keyset_and_bulk_delete_parameters() {
            check("keyset and bulk delete", request(), |(q, ct, body)| {
                let Ok(p) = Params::parse(&q, &ct, &body) else {
                    return Ok(());
                };
                if let Err(e) = Keyset::requested(&p) {
                    refusal_shape(&e)?;
                }
                match Keyset::from_params(&p) {
                    Ok(k) => {
                        prop_assert!(k.last.as_deref() != Some(""));
                        let sort = p.string("sort").unwrap();
                        prop_assert_eq!(k.descending, sort.as_deref() == Some("desc"));
                    }
                    Err(e) => refusal_shape(&e)?,
                }
                if let Err(e) = crate::api::registry::bulk_rules(&p) {
                    refusal_shape(&e)?;
                }
                Ok(())
            });
        }

        #[test]
        fn fuzz_cleanup_policy_attributes() {
            check("cleanup policy attributes", request(), |(q, ct, body)| {
                let Ok(p) = Params::parse(&q, &ct, &body) else {
                    return Ok(());
                };
                let attrs = match p.nested("container_expiration_policy_attributes") {
                    Ok(Some(a)) => a,
                    _ => p,
                };
                match crate::api::policy::apply(crate::cleanup::default_policy(), &attrs) {
                    Ok(saved) => {
                        // What is saved is a policy the engine can run.
                        berth_core::cleanup::validate_policy_values(
                            &saved.cadence,
                            saved.keep_n,
                            saved.older_than.as_deref(),
                        )
                        .unwrap();
                        crate::cleanup::rules_of(&saved).unwrap();
                        prop_assert_eq!(saved.enabled, saved.next_run_at.is_some());
                    }
                    Err(e) => refusal_shape(&e)?,
                }
                Ok(())
            });
        }
    }
}
