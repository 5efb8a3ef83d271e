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
}
