//! Parsing SIP messages from bytes (RFC 3261 §7, §18.3).
//!
//! Two steps: [`parse_frame`] splits start line, unfolded headers and body;
//! [`interpret`] checks the start line and the headers every transaction
//! needs. A request that fails the second step can still be answered
//! (RFC 3261 §8.2): the error carries the status to send and the raw
//! headers to build the response from.

use super::grammar::{self, trim_lws};
use super::header::{Header, HeaderName, Headers};
use super::headers_typed::{CSeq, NameAddr, NameAddrError, Via};
use super::message::{CoreHeaders, Request, Response, SipMessage};
use super::method::Method;
use super::uri::{Uri, UriError};
use bytes::Bytes;

/// Upper bound on header lines in one message; more is treated as abuse.
pub const MAX_HEADERS: usize = 256;

/// A message split into its parts, nothing interpreted yet.
#[derive(Clone, Debug)]
pub struct RawMessage {
    pub start_line: String,
    pub headers: Headers,
    pub body: Bytes,
}

impl RawMessage {
    pub fn is_request(&self) -> bool {
        !self
            .start_line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    }
}

/// Why a message was not accepted.
#[derive(Clone, Debug)]
pub enum ParseError {
    /// Not answerable: no SIP framing, or a malformed response (RFC 3261
    /// §18.3: responses are discarded). Dropped and counted.
    Drop(&'static str),
    /// A request to answer with `status`; `reason` names what is wrong and
    /// goes in the reason phrase and a Warning header.
    Reject {
        status: u16,
        reason: String,
        raw: Box<RawMessage>,
    },
}

impl ParseError {
    /// Bounded label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            ParseError::Drop(_) => "garbage",
            ParseError::Reject { status: 505, .. } => "version",
            ParseError::Reject { status: 416, .. } => "uri_scheme",
            ParseError::Reject { .. } => "malformed",
        }
    }
}

/// Whether the bytes came in a datagram (UDP) or from a stream (TCP/TLS);
/// Content-Length semantics differ (RFC 3261 §18.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    /// The stream framer already cut the body to Content-Length.
    Stream,
}

/// Finds the end of the header section: returns (index of the blank line,
/// index where the body starts). Accepts CRLF and bare LF line ends.
pub fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Strips CRLFs sent before a message (RFC 3261 §7.5) and keep-alives.
pub fn skip_leading_crlf(buf: &[u8]) -> &[u8] {
    let n = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    &buf[n..]
}

/// Whether the first line of `buf` ends in a SIP-Version, as a request
/// line does: bytes that do not are noise, not a message to answer.
fn ends_like_a_request_line(buf: &[u8]) -> bool {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.rsplit(|b| *b == b' ')
        .next()
        .is_some_and(|v| v.len() >= 4 && v[..4].eq_ignore_ascii_case(b"SIP/"))
        && line.contains(&b' ')
}

/// Splits `buf` into start line, headers and body.
pub fn parse_frame(buf: &[u8], framing: Framing) -> Result<RawMessage, ParseError> {
    let buf = skip_leading_crlf(buf);
    if buf.is_empty() {
        return Err(ParseError::Drop("empty"));
    }
    // A datagram is the whole message: one whose header section does not
    // end in an empty line is still answerable (RFC 4475 §3.1.2.15).
    let (head_end, body_start, unterminated) = match find_header_end(buf) {
        Some((h, b)) => (h, b, false),
        None if framing == Framing::Datagram && ends_like_a_request_line(buf) => {
            let end = buf
                .strip_suffix(b"\r\n")
                .or_else(|| buf.strip_suffix(b"\n"))
                .unwrap_or(buf)
                .len();
            (end, buf.len(), true)
        }
        None => return Err(ParseError::Drop("no end of headers")),
    };
    let head = &buf[..head_end];
    let head =
        std::str::from_utf8(head).map_err(|_| ParseError::Drop("header section is not UTF-8"))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default().to_string();
    if start_line.is_empty() || start_line.starts_with([' ', '\t']) {
        return Err(ParseError::Drop("bad start line"));
    }
    let mut headers: Vec<Header> = Vec::new();
    let mut pending: Option<(String, String)> = None;
    let mut bad_header: Option<String> = None;
    for line in lines {
        if line.contains('\r') && bad_header.is_none() {
            bad_header = Some("bare CR inside header line".into());
        }
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 3261 §7.3.1): replace the line break
            // and leading whitespace with one SP.
            match pending.as_mut() {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(trim_lws(line));
                }
                None => {
                    bad_header.get_or_insert_with(|| "continuation line without a header".into());
                }
            }
            continue;
        }
        if let Some((n, v)) = pending.take() {
            headers.push(Header {
                name: HeaderName::parse(&n),
                value: trim_lws(&v).to_string(),
            });
        }
        let Some(colon) = line.find(':') else {
            bad_header
                .get_or_insert_with(|| format!("header line without ':' ({})", truncate(line)));
            continue;
        };
        let name = trim_lws(&line[..colon]);
        if !grammar::is_token(name) {
            bad_header.get_or_insert_with(|| format!("invalid header name {:?}", truncate(name)));
            continue;
        }
        pending = Some((name.to_string(), line[colon + 1..].to_string()));
        if headers.len() > MAX_HEADERS {
            return Err(ParseError::Drop("too many headers"));
        }
    }
    if let Some((n, v)) = pending.take() {
        headers.push(Header {
            name: HeaderName::parse(&n),
            value: trim_lws(&v).to_string(),
        });
    }
    let headers = Headers(headers);
    let mut body = &buf[body_start..];
    let mut raw = RawMessage {
        start_line,
        headers,
        body: Bytes::new(),
    };
    let reject = |raw: RawMessage, reason: String| -> ParseError {
        if raw.is_request() {
            ParseError::Reject {
                status: 400,
                reason,
                raw: Box::new(raw),
            }
        } else {
            ParseError::Drop("malformed response")
        }
    };
    // Content-Length: every instance must agree and be a number.
    let mut declared: Option<u64> = None;
    let mut cl_error: Option<&str> = None;
    for v in raw.headers.get_all(&HeaderName::ContentLength) {
        match grammar::parse_decimal(v, u32::MAX as u64) {
            Some(n) if declared.is_none_or(|d| d == n) => declared = Some(n),
            Some(_) => cl_error = Some("conflicting Content-Length headers"),
            None => cl_error = Some("malformed Content-Length"),
        }
    }
    if let Some(e) = cl_error {
        return Err(reject(raw, e.into()));
    }
    if let Some(n) = declared {
        let n = n as usize;
        if n > body.len() {
            // §18.3: a datagram that ends before the body is an error.
            return Err(reject(
                raw,
                "Content-Length larger than the message body".into(),
            ));
        }
        if framing == Framing::Datagram {
            // Bytes beyond Content-Length in a datagram are discarded.
            body = &body[..n];
        }
    }
    raw.body = Bytes::copy_from_slice(body);
    if let Some(b) = bad_header {
        return Err(reject(raw, b));
    }
    if unterminated {
        return Err(reject(raw, "no empty line ends the header section".into()));
    }
    Ok(raw)
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The answer to a stream whose framing failed once a whole header section
/// had arrived (`head`, through the blank line): a request gets a stateless
/// 400 naming `why`, anything else is dropped. The connection closes after
/// it, since the stream cannot be resynchronised (RFC 3261 §18.3).
pub fn unframeable(head: &[u8], why: &str) -> ParseError {
    let raw = match parse_frame(head, Framing::Datagram) {
        Ok(raw) => raw,
        Err(ParseError::Reject { raw, .. }) => *raw,
        Err(e @ ParseError::Drop(_)) => return e,
    };
    if !raw.is_request() {
        return ParseError::Drop("unframeable response");
    }
    reject(raw, 400, why)
}

/// Parses a complete message.
pub fn parse(buf: &[u8], framing: Framing) -> Result<SipMessage, ParseError> {
    interpret(parse_frame(buf, framing)?)
}

/// Checks the start line and core headers of a framed message.
pub fn interpret(raw: RawMessage) -> Result<SipMessage, ParseError> {
    if raw.is_request() {
        interpret_request(raw).map(SipMessage::Request)
    } else {
        interpret_response(raw).map(SipMessage::Response)
    }
}

fn reject(raw: RawMessage, status: u16, reason: impl Into<String>) -> ParseError {
    ParseError::Reject {
        status,
        reason: reason.into(),
        raw: Box::new(raw),
    }
}

fn is_sip_2_0(v: &str) -> bool {
    v.eq_ignore_ascii_case("SIP/2.0")
}

fn interpret_request(raw: RawMessage) -> Result<Request, ParseError> {
    // Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 §7.1).
    let start_line = raw.start_line.clone();
    let parts: Vec<&str> = start_line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        let msg = if parts.len() > 3 && parts.last().is_some_and(|v| is_sip_2_0(v)) {
            "Request-Line has extra whitespace"
        } else {
            "malformed Request-Line"
        };
        return Err(reject(raw, 400, msg));
    }
    let (method_s, uri_s, version) = (parts[0], parts[1], parts[2]);
    let Some(method) = Method::parse(method_s) else {
        return Err(reject(raw, 400, "method is not a token"));
    };
    if !version
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return Err(reject(raw, 400, "malformed SIP-Version"));
    }
    if !is_sip_2_0(version) {
        return Err(reject(raw, 505, format!("{version} not supported")));
    }
    let core = match core_headers(&raw.headers) {
        Ok(c) => c,
        Err(e) => return Err(reject(raw, 400, e.to_string())),
    };
    let uri = match Uri::parse(uri_s) {
        Ok(u) => u,
        Err(UriError::UnsupportedScheme(s)) => {
            return Err(reject(raw, 416, format!("URI scheme {s} not supported")));
        }
        Err(UriError::Invalid(why)) => return Err(reject(raw, 400, format!("Request-URI: {why}"))),
    };
    if core.cseq.method != method {
        return Err(reject(
            raw,
            400,
            "CSeq method does not match the request method",
        ));
    }
    let max_forwards = match raw.headers.count(&HeaderName::MaxForwards) {
        0 => None,
        1 => match raw
            .headers
            .get(&HeaderName::MaxForwards)
            .and_then(|v| grammar::parse_decimal(v, 255))
        {
            Some(v) => Some(v as u32),
            None => return Err(reject(raw, 400, "malformed Max-Forwards")),
        },
        _ => return Err(reject(raw, 400, "more than one Max-Forwards")),
    };
    // Headers whose syntax matters to us even when we do not act on them.
    for name in [
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::RecordRoute,
    ] {
        for v in raw.headers.list(&name) {
            if name == HeaderName::Contact && v == "*" {
                continue;
            }
            if let Err(e) = NameAddr::parse(v) {
                let why = format!("{name}: {e}");
                return Err(reject(raw, 400, why));
            }
        }
    }
    for name in [HeaderName::Expires, HeaderName::MinExpires] {
        if let Some(v) = raw.headers.get(&name)
            && grammar::parse_decimal(v, u32::MAX as u64).is_none()
        {
            let why = format!("malformed {name}");
            return Err(reject(raw, 400, why));
        }
    }
    if let Some(ct) = raw.headers.get(&HeaderName::ContentType)
        && !is_media_type(ct)
    {
        return Err(reject(raw, 400, "malformed Content-Type"));
    }
    Ok(Request {
        method,
        uri,
        headers: raw.headers,
        body: raw.body,
        core,
        max_forwards,
    })
}

fn interpret_response(raw: RawMessage) -> Result<Response, ParseError> {
    // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2).
    let mut it = raw.start_line.splitn(3, ' ');
    let version = it.next().unwrap_or_default();
    let code = it.next().unwrap_or_default();
    let reason = it.next().unwrap_or_default().to_string();
    if !is_sip_2_0(version) {
        return Err(ParseError::Drop("response version is not SIP/2.0"));
    }
    let status = match grammar::parse_decimal(code, 699) {
        Some(s) if s >= 100 && code.len() == 3 => s as u16,
        _ => return Err(ParseError::Drop("malformed status code")),
    };
    let core =
        core_headers(&raw.headers).map_err(|_| ParseError::Drop("malformed response headers"))?;
    Ok(Response {
        status,
        reason,
        headers: raw.headers,
        body: raw.body,
        core,
    })
}

/// `type/subtype *(;param)` (RFC 3261 §20.15).
fn is_media_type(v: &str) -> bool {
    let (mt, params) = match v.find(';') {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let mut parts = mt.splitn(2, '/');
    let (Some(t), Some(s)) = (parts.next(), parts.next()) else {
        return false;
    };
    grammar::is_token(trim_lws(t))
        && grammar::is_token(trim_lws(s))
        && grammar::Params::parse(params).is_ok()
}

/// What is wrong with the headers every message needs; the text goes in
/// a 400's reason phrase and Warning header.
#[derive(Clone, Debug, thiserror::Error)]
enum CoreHeaderError {
    #[error("missing {0} header")]
    Missing(HeaderName),
    #[error("more than one {0} header")]
    Repeated(HeaderName),
    #[error("{0}")]
    Via(&'static str),
    #[error("{name}: {error}")]
    Address {
        name: HeaderName,
        #[source]
        error: NameAddrError,
    },
    #[error("malformed Call-ID")]
    CallId,
    #[error("{0}")]
    CSeq(&'static str),
}

fn single<'a>(headers: &'a Headers, name: &HeaderName) -> Result<&'a str, CoreHeaderError> {
    match headers.count(name) {
        0 => Err(CoreHeaderError::Missing(name.clone())),
        1 => Ok(headers.get(name).unwrap_or_default()),
        _ => Err(CoreHeaderError::Repeated(name.clone())),
    }
}

fn core_headers(headers: &Headers) -> Result<CoreHeaders, CoreHeaderError> {
    let via_values = headers.list(&HeaderName::Via);
    if via_values.is_empty() {
        return Err(CoreHeaderError::Missing(HeaderName::Via));
    }
    let vias = via_values
        .into_iter()
        .map(Via::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CoreHeaderError::Via)?;
    let name_addr = |name: HeaderName| -> Result<NameAddr, CoreHeaderError> {
        let v = single(headers, &name)?;
        NameAddr::parse(v).map_err(|error| CoreHeaderError::Address { name, error })
    };
    let from = name_addr(HeaderName::From)?;
    let to = name_addr(HeaderName::To)?;
    let call_id = trim_lws(single(headers, &HeaderName::CallId)?).to_string();
    // callid = word ["@" word] (RFC 3261 §25.1): no whitespace, no CTLs.
    if call_id.is_empty() || call_id.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(CoreHeaderError::CallId);
    }
    let cseq = CSeq::parse(single(headers, &HeaderName::CSeq)?).map_err(CoreHeaderError::CSeq)?;
    Ok(CoreHeaders {
        vias,
        from,
        to,
        call_id,
        cseq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:+15550001@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n\
Max-Forwards: 70\r\n\
From: <sip:carrier@127.0.0.1>;tag=a\r\n\
To: <sip:+15550001@127.0.0.1>\r\n\
Call-ID: opt-1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

    fn status_of(msg: &str) -> u16 {
        match parse(msg.as_bytes(), Framing::Datagram) {
            Ok(_) => 0,
            Err(ParseError::Reject { status, .. }) => status,
            Err(ParseError::Drop(_)) => 1,
        }
    }

    #[test]
    fn a_datagram_without_the_empty_line_is_answered_400() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n";
        match parse(msg, Framing::Datagram) {
            Err(ParseError::Reject {
                status,
                reason,
                raw,
            }) => {
                assert_eq!(status, 400);
                assert!(reason.contains("empty line"), "{reason}");
                assert_eq!(raw.headers.get(&HeaderName::CallId), Some("x"));
            }
            other => panic!("{other:?}"),
        }
        // On a stream the rest may still come: the framer waits, and a
        // parse of the bytes so far is no message.
        assert!(matches!(
            parse(msg, Framing::Stream),
            Err(ParseError::Drop(_))
        ));
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n";
        assert!(matches!(
            parse(resp, Framing::Datagram),
            Err(ParseError::Drop(_))
        ));
    }

    #[test]
    fn an_unframeable_request_gets_400_and_a_response_nothing() {
        let head = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: -5\r\n\r\n";
        match unframeable(head, "Content-Length is required") {
            ParseError::Reject { status, reason, .. } => {
                assert_eq!(
                    (status, reason.as_str()),
                    (400, "Content-Length is required")
                )
            }
            other => panic!("{other:?}"),
        }
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert!(matches!(unframeable(resp, "x"), ParseError::Drop(_)));
    }

    #[test]
    fn parses_a_plain_request() {
        let SipMessage::Request(r) = parse(OPTIONS.as_bytes(), Framing::Datagram).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.core.call_id, "opt-1");
        assert_eq!(r.max_forwards, Some(70));
        assert_eq!(r.branch(), Some("z9hG4bK-1"));
    }

    #[test]
    fn folded_headers_and_lf_only() {
        let msg = OPTIONS
            .replace("\r\n", "\n")
            .replace("Call-ID: opt-1", "Call-ID:\n  opt-1");
        let SipMessage::Request(r) = parse(msg.as_bytes(), Framing::Datagram).unwrap() else {
            panic!()
        };
        assert_eq!(r.core.call_id, "opt-1");
    }

    #[test]
    fn rejections_carry_status() {
        assert_eq!(
            status_of(&OPTIONS.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")),
            505
        );
        assert_eq!(
            status_of(&OPTIONS.replace("sip:+15550001@127.0.0.1 SIP", "kingkong:x SIP")),
            416
        );
        assert_eq!(
            status_of(&OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")),
            400
        );
        assert_eq!(
            status_of(&OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: 300")),
            400
        );
        assert_eq!(status_of(&OPTIONS.replace("Call-ID: opt-1\r\n", "")), 400);
        // A NUL or another control character in a Call-ID (not a word).
        assert_eq!(status_of(&OPTIONS.replace("opt-1", "opt\u{0}1")), 400);
        assert_eq!(status_of(&OPTIONS.replace("opt-1", "opt\u{7}1")), 400);
        assert_eq!(
            status_of(&OPTIONS.replace("Content-Length: 0", "Content-Length: 10")),
            400
        );
        assert_eq!(
            status_of(&OPTIONS.replace("OPTIONS sip", "OPTIONS  sip")),
            400
        );
        assert_eq!(status_of("garbage"), 1);
        assert_eq!(status_of("\r\n\r\n"), 1);
    }

    #[test]
    fn datagram_body_is_cut_at_content_length() {
        let msg = OPTIONS.replace("Content-Length: 0", "Content-Length: 3") + "abcdef";
        let SipMessage::Request(r) = parse(msg.as_bytes(), Framing::Datagram).unwrap() else {
            panic!()
        };
        assert_eq!(&r.body[..], b"abc");
    }

    #[test]
    fn malformed_response_is_dropped() {
        let resp = "SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n";
        assert!(matches!(
            parse(resp.as_bytes(), Framing::Datagram),
            Err(ParseError::Drop(_))
        ));
    }
}
