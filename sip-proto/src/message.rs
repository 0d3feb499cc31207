//! The SIP message model: requests and responses with their raw header list
//! and a typed view of the headers every transaction needs.

use super::header::{HeaderName, Headers};
use super::headers_typed::{CSeq, NameAddr, Via};
use super::method::Method;
use super::uri::Uri;
use bytes::Bytes;
use std::fmt::Write as _;

/// Headers present in every request and response (RFC 3261 §8.1.1),
/// parsed once at reception.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreHeaders {
    pub vias: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
}

impl CoreHeaders {
    pub fn top_via(&self) -> &Via {
        // Construction guarantees at least one Via.
        &self.vias[0]
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
    pub core: CoreHeaders,
    pub max_forwards: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
    pub core: CoreHeaders,
}

#[derive(Clone, Debug)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl SipMessage {
    pub fn core(&self) -> &CoreHeaders {
        match self {
            SipMessage::Request(r) => &r.core,
            SipMessage::Response(r) => &r.core,
        }
    }
}

impl Request {
    pub fn branch(&self) -> Option<&str> {
        self.core.top_via().branch()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(&HeaderName::ContentType)
    }

    /// Option tags listed in `Require` (RFC 3261 §20.32).
    pub fn require(&self) -> Vec<&str> {
        self.headers.list(&HeaderName::Require)
    }

    pub fn supported(&self) -> Vec<&str> {
        self.headers.list(&HeaderName::Supported)
    }

    pub fn to_tag(&self) -> Option<&str> {
        self.core.to.tag()
    }

    pub fn from_tag(&self) -> Option<&str> {
        self.core.from.tag()
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(
            &format!("{} {} SIP/2.0", self.method, self.uri),
            &self.headers,
            &self.body,
        )
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        encode(
            &format!("SIP/2.0 {} {}", self.status, self.reason),
            &self.headers,
            &self.body,
        )
    }
}

/// Writes a start line, the headers (with a recomputed Content-Length) and
/// the body.
pub fn encode(start_line: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut head = String::with_capacity(512);
    head.push_str(start_line);
    head.push_str("\r\n");
    for h in headers.iter() {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        head.push_str(h.name.as_str());
        head.push_str(": ");
        head.push_str(&h.value);
        head.push_str("\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Default reason phrases (RFC 3261 §21 and extensions we send).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}
