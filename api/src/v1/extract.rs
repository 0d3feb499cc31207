//! Request extractors that fail with an [`ApiError`] naming the field:
//! JSON bodies, query strings and the bearer token.

use super::ApiState;
use super::error::ApiError;
use crate::auth::{AuthError, Principal};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

/// Largest JSON body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON body whose errors name the offending field by its path.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json")
                    || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_body",
                format!("cannot read the body: {e}"),
            )
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `bytes`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde reports a missing field at its parent; name the field.
        let field = match msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            Some(name) if path == "." => name.to_string(),
            Some(name) => format!("{path}.{name}"),
            None => path,
        };
        let mut err = ApiError::field(field, msg);
        if inner.is_syntax() || inner.is_eof() {
            err.status = StatusCode::BAD_REQUEST;
            err.detail.code = "invalid_body";
            err.detail.field = None;
        }
        err
    })
}

/// A query string whose errors name the parameter.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded_de(q);
        match de {
            Ok(v) => Ok(QueryParams(v)),
            Err((field, msg)) => Err(ApiError::field(field, msg)),
        }
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(q: &str) -> Result<T, (String, String)> {
    // Through a JSON object of strings, so the path-aware deserializer
    // names the parameter; typed fields parse from their string form.
    let mut map = serde_json::Map::new();
    for (k, v) in form_pairs(q) {
        if map.contains_key(&k) {
            return Err((k.clone(), format!("query parameter {k:?} given twice")));
        }
        map.insert(k, serde_json::Value::String(v));
    }
    let value = serde_json::Value::Object(map);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner().to_string())
    })
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match (b[i], b.get(i + 1), b.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match decoded {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path parameters whose errors are JSON (a segment that is not UTF-8).
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                e.body_text(),
            )),
        }
    }
}

/// The caller, from `Authorization: Bearer <jwt>`; also applies the
/// per-account rate limit.
pub struct Auth(pub Principal);

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<ApiState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers);
        let principal = match token {
            None => Err(AuthError::Missing),
            Some(t) => state.verifier.verify(t),
        }
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        if let Some(a) = &principal.account
            && let Err(wait) = state.limits.account(a)
        {
            return Err(super::ratelimit::too_many(wait, "account"));
        }
        Ok(Auth(principal))
    }
}

impl Auth {
    /// The account a non-admin request is scoped to.
    pub fn account(&self) -> Result<&str, ApiError> {
        self.0
            .account
            .as_deref()
            .ok_or_else(|| ApiError::forbidden("this token names no account (claim \"account\")"))
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this needs an admin token (claim \"admin\": true)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        to: String,
        stream: Option<Inner>,
        limit: Option<u32>,
    }

    #[test]
    fn body_errors_name_the_field() {
        let f = |s: &str| parse_json::<Body>(s.as_bytes()).unwrap_err().detail;
        assert_eq!(f("{}").field.as_deref(), Some("to"));
        assert_eq!(f(r#"{"to": 5}"#).field.as_deref(), Some("to"));
        assert_eq!(
            f(r#"{"to":"x","stream":{}}"#).field.as_deref(),
            Some("stream.url")
        );
        assert_eq!(
            f(r#"{"to":"x","limit":-1}"#).field.as_deref(),
            Some("limit")
        );
        assert_eq!(f(r#"{"to":"x","bogus":1}"#).code, "invalid_field");
        let syntax = parse_json::<Body>(b"{\"to\":").unwrap_err();
        assert_eq!(syntax.status, StatusCode::BAD_REQUEST);
        assert_eq!(syntax.detail.code, "invalid_body");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Q {
        #[serde(default, deserialize_with = "crate::v1::schema::opt_u32")]
        limit: Option<u32>,
        from: Option<String>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let q: Q = serde_urlencoded_de("limit=5&from=%2B1555+1").unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.from.as_deref(), Some("+1555 1"));
        let (field, _) = serde_urlencoded_de::<Q>("limit=abc").unwrap_err();
        assert_eq!(field, "limit");
        let (field, _) = serde_urlencoded_de::<Q>("limit=1&limit=2").unwrap_err();
        assert_eq!(field, "limit");
        assert_eq!(percent_decode("%zz%2"), "%zz%2");
    }
}
