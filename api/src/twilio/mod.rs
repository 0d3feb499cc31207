//! The Twilio-compatible REST surface, under `/2010-04-01/Accounts/
//! {AccountSid}/…`: an app written with Twilio's helper libraries points
//! their base URL here and keeps its code. The account id is the
//! `AccountSid`; HTTP basic auth carries it with the account's auth token
//! (`POST /v1/accounts/{id}/auth-token`). Bodies are form-encoded as
//! Twilio's; answers and errors have Twilio's JSON shapes
//! (<https://www.twilio.com/docs/usage/twilios-response>).
//!
//! What is built: the Calls (`calls.rs`) and Messages (`messages.rs`)
//! resources. Parameters that would
//! change what a call does and are not carried out are refused with
//! Twilio's error body naming them, never silently ignored.

mod calls;
mod error;
mod messages;
mod paging;

use crate::v1::ApiState;
use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::routing::get;
pub use error::TwilioError;

/// The API version in every path.
pub const API_VERSION: &str = "2010-04-01";

/// Every Twilio-compatible route (paths include `/2010-04-01`).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            get(calls::list).post(calls::create),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{sid}",
            get(calls::fetch).post(calls::update),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            get(messages::list).post(messages::create),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Messages/{sid}",
            get(messages::fetch),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::v1::per_ip_limit,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::v1::extract::MAX_BODY,
        ))
        .with_state(state)
}

/// The account a request authenticated as: basic auth whose user is the
/// path's `AccountSid` and whose password is that account's auth token.
pub(crate) struct TwilioAccount(pub String);

impl FromRequestParts<ApiState> for TwilioAccount {
    type Rejection = TwilioError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, TwilioError> {
        use base64::Engine as _;
        let Path(params): Path<Vec<(String, String)>> = Path::from_request_parts(parts, s)
            .await
            .map_err(|_| TwilioError::not_found())?;
        let account = params
            .iter()
            .find(|(k, _)| k == "account")
            .map(|(_, v)| v.clone())
            .ok_or_else(TwilioError::not_found)?;
        let credentials = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(TwilioError::unauthenticated)?;
        let (user, password) = credentials
            .split_once(':')
            .ok_or_else(TwilioError::unauthenticated)?;
        if user != account {
            return Err(TwilioError::unauthenticated());
        }
        let token = s
            .store
            .account_auth_token(&account)
            .await
            .map_err(|e| TwilioError::internal(&e))?;
        match token {
            Some(t) if constant_time_eq(t.as_bytes(), password.as_bytes()) => {
                // The account's own request budget, as on /v1.
                if let Err(wait) = s.limits.account(&account) {
                    return Err(TwilioError::too_many(wait));
                }
                Ok(TwilioAccount(account))
            }
            _ => Err(TwilioError::unauthenticated()),
        }
    }
}

/// Whether `a` and `b` are equal, in time that does not depend on where
/// they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A form-encoded body as its (name, value) pairs, repeats kept
/// (`StatusCallbackEvent=ringing&StatusCallbackEvent=answered`).
pub(crate) struct FormBody(pub Vec<(String, String)>);

impl axum::extract::FromRequest<ApiState> for FormBody {
    type Rejection = TwilioError;

    async fn from_request(req: axum::extract::Request, s: &ApiState) -> Result<Self, TwilioError> {
        let bytes = axum::body::Bytes::from_request(req, s)
            .await
            .map_err(|e| TwilioError::bad_request(format!("cannot read the body: {e}")))?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map(FormBody)
            .map_err(|e| TwilioError::bad_request(format!("the body is not a form: {e}")))
    }
}

impl FormBody {
    /// The last value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub(crate) fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
