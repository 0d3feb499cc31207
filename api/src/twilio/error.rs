//! Twilio's error body: `{"code", "message", "more_info", "status"}`,
//! which Twilio's helper libraries raise as `TwilioRestException` with
//! its code and status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct TwilioError {
    /// Twilio's error code (<https://www.twilio.com/docs/api/errors>).
    pub code: u32,
    pub message: String,
    pub more_info: String,
    pub status: u16,
    #[serde(skip)]
    retry_after_secs: Option<u64>,
}

impl TwilioError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> TwilioError {
        TwilioError {
            code,
            message: message.into(),
            more_info: format!("https://www.twilio.com/docs/errors/{code}"),
            status: status.as_u16(),
            retry_after_secs: None,
        }
    }

    /// 20003: the credentials are missing or wrong.
    pub fn unauthenticated() -> TwilioError {
        TwilioError::new(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
    }

    /// 20404: no such resource for this account.
    pub fn not_found() -> TwilioError {
        TwilioError::new(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        )
    }

    /// 21201-style: a parameter is missing or invalid (the message names
    /// it).
    pub fn bad_request(message: impl Into<String>) -> TwilioError {
        TwilioError::new(StatusCode::BAD_REQUEST, 21201, message)
    }

    /// 20001: a parameter this gateway does not carry out.
    pub fn unsupported(param: &str) -> TwilioError {
        TwilioError::new(
            StatusCode::BAD_REQUEST,
            20001,
            format!("{param} is not supported by this gateway"),
        )
    }

    /// 20429: too many requests.
    pub fn too_many(wait: std::time::Duration) -> TwilioError {
        let mut e = TwilioError::new(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
        e.retry_after_secs = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    /// 503 with a reason (the signalling core is away or busy).
    pub fn unavailable(message: impl Into<String>) -> TwilioError {
        TwilioError::new(StatusCode::SERVICE_UNAVAILABLE, 20503, message)
    }

    pub fn internal(e: &dyn std::fmt::Display) -> TwilioError {
        tracing::error!(error = %e, "Twilio-compatible API: internal error");
        TwilioError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        )
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = (status, axum::Json(&self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
        }
        if let Some(s) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
