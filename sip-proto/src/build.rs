//! Building outgoing messages: responses mirror the request's Via, From,
//! To, Call-ID and CSeq (RFC 3261 §8.2.6.2); requests are written from parts.

use super::header::{HeaderName, Headers};
use super::message::{Request, encode, reason_phrase};
use super::method::Method;
use super::parse::RawMessage;
use super::uri::Uri;
use bytes::Bytes;

/// A message being written.
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    start_line: String,
    pub headers: Headers,
    body: Bytes,
}

impl MessageBuilder {
    pub fn request(method: &Method, uri: &Uri) -> MessageBuilder {
        MessageBuilder {
            start_line: format!("{method} {uri} SIP/2.0"),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    pub fn response(status: u16, reason: &str) -> MessageBuilder {
        MessageBuilder {
            start_line: format!("SIP/2.0 {status} {}", sanitize(reason)),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.headers.set(HeaderName::ContentType, content_type);
        self.body = body.into();
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(&self.start_line, &self.headers, &self.body)
    }
}

/// Keeps reason phrases on one line.
fn sanitize(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect()
}

/// Appends `;tag=` to a To value that has none.
fn with_tag(to: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) if !has_tag_param(to) => format!("{to};tag={t}"),
        _ => to.to_string(),
    }
}

fn has_tag_param(v: &str) -> bool {
    // Only parameters after the closing '>' (or the whole addr-spec) count.
    let params = match v.rfind('>') {
        Some(i) => &v[i..],
        None => v,
    };
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag"))
}

/// A response to `req` with the mandatory headers copied. `to_tag` is added
/// to To unless it already carries one.
pub fn response_to(
    req: &Request,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> MessageBuilder {
    let mut b = MessageBuilder::response(status, reason.unwrap_or(reason_phrase(status)));
    for v in req.headers.get_all(&HeaderName::Via) {
        b.headers.push(HeaderName::Via, v);
    }
    let from = req.headers.get(&HeaderName::From).unwrap_or_default();
    let to = req.headers.get(&HeaderName::To).unwrap_or_default();
    b.headers.push(HeaderName::From, from);
    b.headers.push(HeaderName::To, with_tag(to, to_tag));
    b.headers.push(HeaderName::CallId, req.core.call_id.clone());
    b.headers.push(HeaderName::CSeq, req.core.cseq.to_string());
    b
}

/// A response to a request that failed to parse. `None` when the request
/// lacks what a response needs (then it can only be dropped).
pub fn response_to_raw(
    raw: &RawMessage,
    status: u16,
    reason: &str,
    to_tag: &str,
) -> Option<MessageBuilder> {
    let h = &raw.headers;
    let vias: Vec<&str> = h.get_all(&HeaderName::Via).collect();
    // Without a Via the answer has nowhere to be matched; the other
    // headers are copied when present (RFC 4475 §3.3.1: a request missing
    // From, To or Call-ID still gets its 400).
    if vias.is_empty() {
        return None;
    }
    let mut b = MessageBuilder::response(status, reason);
    for v in vias {
        b.headers.push(HeaderName::Via, v);
    }
    if let Some(from) = h.get(&HeaderName::From) {
        b.headers.push(HeaderName::From, from);
    }
    if let Some(to) = h.get(&HeaderName::To) {
        b.headers.push(HeaderName::To, with_tag(to, Some(to_tag)));
    }
    for name in [HeaderName::CallId, HeaderName::CSeq] {
        if let Some(v) = h.get(&name) {
            b.headers.push(name, v);
        }
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_detection() {
        assert!(has_tag_param("<sip:a@b>;tag=1"));
        assert!(!has_tag_param("<sip:a@b;tagx=1>"));
        assert!(has_tag_param("sip:a@b ; TAG = 1"));
        assert_eq!(with_tag("<sip:a@b>", Some("x")), "<sip:a@b>;tag=x");
        assert_eq!(with_tag("<sip:a@b>;tag=y", Some("x")), "<sip:a@b>;tag=y");
    }

    #[test]
    fn reason_is_sanitized() {
        let b = MessageBuilder::response(400, "bad\r\nInjected: yes");
        let s = String::from_utf8(b.encode()).unwrap();
        assert!(s.starts_with("SIP/2.0 400 bad  Injected: yes\r\n"));
    }
}
