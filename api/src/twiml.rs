//! TwiML, as a voice webhook written for Twilio answers it
//! (<https://www.twilio.com/docs/voice/twiml>): parsed into the verbs this
//! gateway carries out, or refused with the reason.
//!
//! Sans-IO: bytes and the URL the document came from in, verbs out. The
//! call core runs the verbs; the webhook edge fetches the documents.
//!
//! What is carried out: `<Connect><Stream>` (with `<Parameter>`s),
//! `<Dial>` with one `<Number>`, `<Sip>` or a bare number (`timeout`,
//! `callerId`, `action`, `method`), `<Hangup>`, `<Reject reason>`,
//! `<Pause length>` and `<Redirect method>`. Any other verb, noun or
//! attribute that would change what happens to the call is refused as a
//! whole document, naming what was not understood: a call is never half
//! carried out because one verb was silently skipped.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
pub use reqwest::Url;

/// The largest document read (the webhook edge stops reading there).
pub const MAX_BYTES: usize = 64 * 1024;
/// Elements in one document, nested at most [`MAX_DEPTH`] deep.
const MAX_ELEMENTS: usize = 256;
const MAX_DEPTH: usize = 8;
/// `<Parameter>`s of one stream (Twilio's own limit is lower in bytes).
const MAX_PARAMETERS: usize = 32;
/// Longest `<Pause>`, and the range of `<Dial timeout>` (Twilio's).
pub const MAX_PAUSE_S: u32 = 600;
const DIAL_TIMEOUT_S: std::ops::RangeInclusive<u32> = 5..=600;

/// One verb of a `<Response>`, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `<Connect><Stream url>`: the call's audio both ways with an AI over
    /// a Twilio Media Streams WebSocket.
    Connect(Stream),
    Dial(Dial),
    /// `<Hangup/>`: end the call.
    Hangup,
    /// `<Reject reason>`: refuse the call without answering it.
    Reject(RejectReason),
    /// `<Pause length>`: wait this many seconds before the next verb.
    Pause(u32),
    /// `<Redirect>`: fetch the next document from this URL.
    Redirect(Fetch),
    /// `<Start><Stream>`: a listen-only copy of the call's audio (both
    /// parties) to this WebSocket once a `<Dial>` connects the call.
    Start(Stream),
    /// `<Stop><Stream>`: no such copy after all.
    Stop,
}

/// `<Stream>` inside `<Connect>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// `ws://` or `wss://`.
    pub url: String,
    /// `<Parameter name value>`s, in order: the AI's `customParameters`.
    pub parameters: Vec<(String, String)>,
}

impl Stream {
    /// The stream this noun names: the `twilio` dialect, with its
    /// `<Parameter>`s as the AI's `customParameters` (JSON object text).
    pub fn target(&self) -> crate::control::StreamTarget {
        let params = (!self.parameters.is_empty()).then(|| {
            let map: serde_json::Map<String, serde_json::Value> = self
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::Value::Object(map).to_string()
        });
        crate::control::StreamTarget {
            url: self.url.clone(),
            dialect: Some("twilio".into()),
            params,
        }
    }
}

/// `<Dial>`: forward the call to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    pub target: DialTarget,
    /// Seconds the target may ring (default 30).
    pub timeout_s: u32,
    /// The caller number the target sees (E.164), instead of the caller's.
    pub caller_id: Option<String>,
    /// Where to ask what comes next when the dial does not connect, with
    /// `DialCallStatus`; without it, the verbs after `<Dial>` go on.
    pub action: Option<Fetch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialTarget {
    /// An E.164 number, dialled through the number's trunk.
    Number(String),
    /// A `sip:` URI.
    Sip(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// 603 Decline (Twilio's default).
    Rejected,
    /// 486 Busy Here.
    Busy,
}

impl RejectReason {
    /// The SIP final status that says it.
    pub fn sip_status(self) -> u16 {
        match self {
            RejectReason::Rejected => 603,
            RejectReason::Busy => 486,
        }
    }
}

/// A document to fetch: an absolute http(s) URL and the method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub url: String,
    pub method: Method,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    Get,
    #[default]
    Post,
}

/// Why a document is refused: says what, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    #[error("TwiML is not well-formed XML: {0}")]
    Xml(String),
    #[error("TwiML must have one <Response> root element")]
    NoResponse,
    #[error("TwiML must not carry a DOCTYPE")]
    DocType,
    #[error("TwiML is larger than 64 KiB, deeper than 8 or has more than 256 elements")]
    TooLarge,
    #[error("<{0}> is not supported by this gateway")]
    Unsupported(String),
    #[error("<{verb}> {attr}: {why}")]
    Attribute {
        verb: &'static str,
        attr: String,
        why: &'static str,
    },
    #[error("<{verb}>: {why}")]
    Content {
        verb: &'static str,
        why: &'static str,
    },
}

/// Parses a `<Response>` fetched from `base` (relative URLs in it are
/// resolved against `base`).
pub fn parse(xml: &[u8], base: &Url) -> Result<Vec<Verb>, TwimlError> {
    if xml.len() > MAX_BYTES {
        return Err(TwimlError::TooLarge);
    }
    let root = read_tree(xml)?;
    if root.name != "Response" || !root.attrs.is_empty() {
        return Err(TwimlError::NoResponse);
    }
    if !root.text.trim().is_empty() {
        return Err(TwimlError::Content {
            verb: "Response",
            why: "text outside a verb",
        });
    }
    root.children.iter().map(|e| verb(e, base)).collect()
}

/// An element: its name, attributes, child elements and its own text.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses any attribute outside `known`.
    fn only_attrs(&self, verb: &'static str, known: &[&str]) -> Result<(), TwimlError> {
        match self
            .attrs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(TwimlError::Attribute {
                verb,
                attr: k.clone(),
                why: "not supported by this gateway",
            }),
            None => Ok(()),
        }
    }

    fn no_children(&self, verb: &'static str) -> Result<(), TwimlError> {
        match self.children.first() {
            Some(c) => Err(TwimlError::Unsupported(format!("{verb}><{}", c.name))),
            None => Ok(()),
        }
    }
}

/// Reads the document into a tree, within the limits.
fn read_tree(xml: &[u8]) -> Result<Element, TwimlError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let xml_err = |e: &dyn std::fmt::Display| TwimlError::Xml(e.to_string());
    loop {
        let ev = reader.read_event().map_err(|e| xml_err(&e))?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                elements += 1;
                if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(TwimlError::TooLarge);
                }
                if root.is_some() && stack.is_empty() {
                    return Err(TwimlError::NoResponse);
                }
                let el = element(s)?;
                if matches!(ev, Event::Start(_)) {
                    stack.push(el);
                } else {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| TwimlError::Xml("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| xml_err(&e))?;
                push_text(&mut stack, root.is_some(), &text)?;
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| xml_err(&e))?;
                push_text(&mut stack, root.is_some(), &text)?;
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| xml_err(&e))? {
                    Some(c) => c,
                    None => match r.decode().map_err(|e| xml_err(&e))?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(TwimlError::Xml(format!("unknown entity &{other};"))),
                    },
                };
                push_text(&mut stack, root.is_some(), c.encode_utf8(&mut [0; 4]))?;
            }
            Event::DocType(_) => return Err(TwimlError::DocType),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(TwimlError::Xml("unclosed element".into()));
    }
    root.ok_or(TwimlError::NoResponse)
}

fn push_text(stack: &mut [Element], after_root: bool, text: &str) -> Result<(), TwimlError> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(text);
            Ok(())
        }
        // Whitespace around the root is allowed; text is not.
        None if text.trim().is_empty() => Ok(()),
        None if after_root => Err(TwimlError::Xml("text after the root element".into())),
        None => Err(TwimlError::NoResponse),
    }
}

fn element(s: &BytesStart<'_>) -> Result<Element, TwimlError> {
    let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| TwimlError::Xml(e.to_string()))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|e| TwimlError::Xml(e.to_string()))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        ..Element::default()
    })
}

fn verb(e: &Element, base: &Url) -> Result<Verb, TwimlError> {
    match e.name.as_str() {
        "Connect" => connect(e),
        "Dial" => dial(e, base),
        "Hangup" => {
            e.only_attrs("Hangup", &[])?;
            e.no_children("Hangup")?;
            Ok(Verb::Hangup)
        }
        "Reject" => {
            e.only_attrs("Reject", &["reason"])?;
            e.no_children("Reject")?;
            let reason = match e.attr("reason") {
                None | Some("rejected") => RejectReason::Rejected,
                Some("busy") => RejectReason::Busy,
                Some(_) => {
                    return Err(TwimlError::Attribute {
                        verb: "Reject",
                        attr: "reason".into(),
                        why: "must be rejected or busy",
                    });
                }
            };
            Ok(Verb::Reject(reason))
        }
        "Pause" => {
            e.only_attrs("Pause", &["length"])?;
            e.no_children("Pause")?;
            let length = match e.attr("length") {
                None => 1,
                Some(v) => v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s <= MAX_PAUSE_S)
                    .ok_or(TwimlError::Attribute {
                        verb: "Pause",
                        attr: "length".into(),
                        why: "must be whole seconds, 0 to 600",
                    })?,
            };
            Ok(Verb::Pause(length))
        }
        "Start" => {
            e.only_attrs("Start", &[])?;
            let [child] = e.children.as_slice() else {
                return Err(TwimlError::Content {
                    verb: "Start",
                    why: "must hold exactly one <Stream>",
                });
            };
            if child.name != "Stream" {
                return Err(TwimlError::Unsupported(format!("Start><{}", child.name)));
            }
            // Both parties are copied (Twilio's `both_tracks`).
            child.only_attrs("Stream", &["url", "name", "track"])?;
            if child.attr("track").is_some_and(|t| t != "both_tracks") {
                return Err(TwimlError::Attribute {
                    verb: "Stream",
                    attr: "track".into(),
                    why: "a <Start> stream here copies both_tracks",
                });
            }
            Ok(Verb::Start(stream_noun(child)?))
        }
        "Stop" => {
            e.only_attrs("Stop", &[])?;
            match e.children.as_slice() {
                [s] if s.name == "Stream" => {
                    s.only_attrs("Stream", &["name"])?;
                    s.no_children("Stream")?;
                    Ok(Verb::Stop)
                }
                _ => Err(TwimlError::Content {
                    verb: "Stop",
                    why: "must hold exactly one <Stream>",
                }),
            }
        }
        "Redirect" => {
            e.only_attrs("Redirect", &["method"])?;
            e.no_children("Redirect")?;
            let method = method("Redirect", e.attr("method"))?;
            let url = http_url("Redirect", "url", e.text.trim(), base)?;
            Ok(Verb::Redirect(Fetch { url, method }))
        }
        other => Err(TwimlError::Unsupported(other.to_string())),
    }
}

fn connect(e: &Element) -> Result<Verb, TwimlError> {
    e.only_attrs("Connect", &[])?;
    if !e.text.trim().is_empty() {
        return Err(TwimlError::Content {
            verb: "Connect",
            why: "text is not a noun",
        });
    }
    let [stream] = e.children.as_slice() else {
        return Err(TwimlError::Content {
            verb: "Connect",
            why: "must hold exactly one <Stream>",
        });
    };
    if stream.name != "Stream" {
        return Err(TwimlError::Unsupported(format!("Connect><{}", stream.name)));
    }
    // Twilio's bidirectional stream carries the caller's track only.
    stream.only_attrs("Stream", &["url", "name", "track"])?;
    if stream.attr("track").is_some_and(|t| t != "inbound_track") {
        return Err(TwimlError::Attribute {
            verb: "Stream",
            attr: "track".into(),
            why: "a <Connect> stream carries inbound_track only",
        });
    }
    Ok(Verb::Connect(stream_noun(stream)?))
}

/// A `<Stream>` noun's URL and `<Parameter>`s.
fn stream_noun(stream: &Element) -> Result<Stream, TwimlError> {
    let url = stream.attr("url").unwrap_or_default().trim();
    let parsed = Url::parse(url).ok();
    if !parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "ws" | "wss") && u.host().is_some())
        || url.len() > 2048
    {
        return Err(TwimlError::Attribute {
            verb: "Stream",
            attr: "url".into(),
            why: "must be an absolute ws:// or wss:// URL",
        });
    }
    let mut parameters = Vec::new();
    for p in &stream.children {
        if p.name != "Parameter" {
            return Err(TwimlError::Unsupported(format!("Stream><{}", p.name)));
        }
        p.only_attrs("Parameter", &["name", "value"])?;
        let name = p.attr("name").unwrap_or_default();
        if name.is_empty() || name.len() > 256 {
            return Err(TwimlError::Attribute {
                verb: "Parameter",
                attr: "name".into(),
                why: "must be 1-256 characters",
            });
        }
        let value = p.attr("value").unwrap_or_default();
        if value.len() > 1024 {
            return Err(TwimlError::Attribute {
                verb: "Parameter",
                attr: "value".into(),
                why: "must be at most 1024 characters",
            });
        }
        parameters.push((name.to_string(), value.to_string()));
    }
    if parameters.len() > MAX_PARAMETERS {
        return Err(TwimlError::Content {
            verb: "Stream",
            why: "at most 32 <Parameter>s",
        });
    }
    Ok(Stream {
        url: url.to_string(),
        parameters,
    })
}

fn dial(e: &Element, base: &Url) -> Result<Verb, TwimlError> {
    // answerOnBridge and ringTone describe what the gateway does anyway:
    // the caller hears the target ring and is answered when it answers.
    e.only_attrs(
        "Dial",
        &[
            "timeout",
            "callerId",
            "action",
            "method",
            "answerOnBridge",
            "ringTone",
        ],
    )?;
    let target = match (e.children.as_slice(), e.text.trim()) {
        ([], "") => {
            return Err(TwimlError::Content {
                verb: "Dial",
                why: "names no number or SIP URI",
            });
        }
        ([], number) => DialTarget::Number(e164("Dial", number)?),
        ([noun], "") => match noun.name.as_str() {
            "Number" => {
                noun.only_attrs("Number", &[])?;
                noun.no_children("Number")?;
                DialTarget::Number(e164("Number", noun.text.trim())?)
            }
            "Sip" => {
                noun.only_attrs("Sip", &[])?;
                noun.no_children("Sip")?;
                DialTarget::Sip(sip_uri(noun.text.trim())?)
            }
            other => return Err(TwimlError::Unsupported(format!("Dial><{other}"))),
        },
        _ => {
            return Err(TwimlError::Content {
                verb: "Dial",
                why: "dials one target: several nouns (simultaneous dialling) are not supported",
            });
        }
    };
    let timeout_s = match e.attr("timeout") {
        None => 30,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|t| DIAL_TIMEOUT_S.contains(t))
            .ok_or(TwimlError::Attribute {
                verb: "Dial",
                attr: "timeout".into(),
                why: "must be whole seconds, 5 to 600",
            })?,
    };
    let caller_id = match e.attr("callerId") {
        None => None,
        Some(v) => Some(
            crate::e164::normalize_e164(v.trim()).ok_or(TwimlError::Attribute {
                verb: "Dial",
                attr: "callerId".into(),
                why: "must be an E.164 number",
            })?,
        ),
    };
    let method = method("Dial", e.attr("method"))?;
    let action = match e.attr("action") {
        None => None,
        Some(a) => Some(Fetch {
            url: http_url("Dial", "action", a.trim(), base)?,
            method,
        }),
    };
    Ok(Verb::Dial(Dial {
        target,
        timeout_s,
        caller_id,
        action,
    }))
}

fn e164(verb: &'static str, text: &str) -> Result<String, TwimlError> {
    crate::e164::normalize_e164(text).ok_or(TwimlError::Content {
        verb,
        why: "the number must be E.164",
    })
}

fn sip_uri(text: &str) -> Result<String, TwimlError> {
    let ok = text.len() <= 256
        && (text.starts_with("sip:") || text.starts_with("sips:"))
        && text.contains('@')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','));
    if ok {
        Ok(text.to_string())
    } else {
        Err(TwimlError::Content {
            verb: "Sip",
            why: "must be a sip: or sips: URI with a user part",
        })
    }
}

fn method(verb: &'static str, m: Option<&str>) -> Result<Method, TwimlError> {
    match m.map(str::trim) {
        None => Ok(Method::Post),
        Some(m) if m.eq_ignore_ascii_case("POST") => Ok(Method::Post),
        Some(m) if m.eq_ignore_ascii_case("GET") => Ok(Method::Get),
        Some(_) => Err(TwimlError::Attribute {
            verb,
            attr: "method".into(),
            why: "must be GET or POST",
        }),
    }
}

/// `raw` resolved against `base`: an absolute http(s) URL.
fn http_url(
    verb: &'static str,
    attr: &'static str,
    raw: &str,
    base: &Url,
) -> Result<String, TwimlError> {
    Some(raw)
        .filter(|r| !r.is_empty())
        .and_then(|r| base.join(r).ok())
        .map(String::from)
        .filter(|u| crate::webhook::valid_url(u))
        .ok_or(TwimlError::Attribute {
            verb,
            attr: attr.into(),
            why: "must be an http(s) URL, absolute or relative to the document's",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://app.example/voice/incoming").unwrap()
    }

    fn p(xml: &str) -> Result<Vec<Verb>, TwimlError> {
        parse(xml.as_bytes(), &base())
    }

    #[test]
    fn a_pipecat_style_connect_stream_with_parameters() {
        let verbs = p(r#"<?xml version="1.0" encoding="UTF-8"?>
            <Response>
              <Connect>
                <Stream url="wss://ai.example/ws">
                  <Parameter name="intent" value="billing &amp; support"/>
                  <Parameter name="lang" value="en"/>
                </Stream>
              </Connect>
              <Pause length="40"/>
            </Response>"#)
        .unwrap();
        assert_eq!(
            verbs,
            vec![
                Verb::Connect(Stream {
                    url: "wss://ai.example/ws".into(),
                    parameters: vec![
                        ("intent".into(), "billing & support".into()),
                        ("lang".into(), "en".into())
                    ],
                }),
                Verb::Pause(40),
            ]
        );
    }

    #[test]
    fn dial_forms_and_their_attributes() {
        assert_eq!(
            p(r#"<Response><Dial timeout="12" callerId="+1 415 555 0100" action="/after" method="GET"><Number>+15551112222</Number></Dial></Response>"#)
                .unwrap(),
            vec![Verb::Dial(Dial {
                target: DialTarget::Number("+15551112222".into()),
                timeout_s: 12,
                caller_id: Some("+14155550100".into()),
                action: Some(Fetch {
                    url: "https://app.example/after".into(),
                    method: Method::Get
                }),
            })]
        );
        assert_eq!(
            p("<Response><Dial>+15551112222</Dial></Response>").unwrap(),
            vec![Verb::Dial(Dial {
                target: DialTarget::Number("+15551112222".into()),
                timeout_s: 30,
                caller_id: None,
                action: None,
            })]
        );
        assert_eq!(
            p("<Response><Dial><Sip>sip:alice@pbx.example:5070;transport=tcp</Sip></Dial></Response>")
                .unwrap(),
            vec![Verb::Dial(Dial {
                target: DialTarget::Sip("sip:alice@pbx.example:5070;transport=tcp".into()),
                timeout_s: 30,
                caller_id: None,
                action: None,
            })]
        );
    }

    #[test]
    fn the_small_verbs() {
        assert_eq!(
            p(r#"<Response><Pause/><Reject reason="busy"/><Reject/><Hangup/><Redirect method="GET">next?x=1</Redirect></Response>"#)
                .unwrap(),
            vec![
                Verb::Pause(1),
                Verb::Reject(RejectReason::Busy),
                Verb::Reject(RejectReason::Rejected),
                Verb::Hangup,
                Verb::Redirect(Fetch {
                    url: "https://app.example/voice/next?x=1".into(),
                    method: Method::Get
                }),
            ]
        );
        assert_eq!(p("<Response/>").unwrap(), vec![]);
        assert_eq!(RejectReason::Busy.sip_status(), 486);
        assert_eq!(RejectReason::Rejected.sip_status(), 603);
    }

    #[test]
    fn start_and_stop_stream() {
        assert_eq!(
            p(r#"<Response><Start><Stream url="wss://rec.example/s" track="both_tracks"><Parameter name="a" value="b"/></Stream></Start><Stop><Stream name="x"/></Stop></Response>"#)
                .unwrap(),
            vec![
                Verb::Start(Stream {
                    url: "wss://rec.example/s".into(),
                    parameters: vec![("a".into(), "b".into())],
                }),
                Verb::Stop,
            ]
        );
        let err = |xml: &str| p(xml).unwrap_err().to_string();
        assert!(err(r#"<Response><Start><Stream url="wss://x/" track="inbound_track"/></Start></Response>"#).contains("both_tracks"));
        assert!(err(r#"<Response><Start><Siprec/></Start></Response>"#).contains("Start><Siprec"));
        assert!(err("<Response><Stop/></Response>").contains("exactly one"));
        assert!(
            err(r#"<Response><Start><Stream url="http://x/"/></Start></Response>"#)
                .contains("ws://")
        );
    }

    #[test]
    fn what_is_not_carried_out_is_named() {
        let err = |xml: &str| p(xml).unwrap_err().to_string();
        assert_eq!(
            err("<Response><Say>hello</Say></Response>"),
            "<Say> is not supported by this gateway"
        );
        assert_eq!(
            err(r#"<Response><Dial record="record-from-answer">+15551112222</Dial></Response>"#),
            "<Dial> record: not supported by this gateway"
        );
        assert_eq!(
            err("<Response><Dial><Queue>q</Queue></Dial></Response>"),
            "<Dial><Queue> is not supported by this gateway"
        );
        assert_eq!(
            err(r#"<Response><Connect><Room>r</Room></Connect></Response>"#),
            "<Connect><Room> is not supported by this gateway"
        );
        assert!(
            err("<Response><Dial><Number>+15551112222</Number><Number>+15551113333</Number></Dial></Response>")
                .contains("several nouns")
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_the_reason() {
        for (xml, want) in [
            ("", "one <Response>"),
            ("not xml", "one <Response>"),
            ("<Response>", "unclosed"),
            ("<Response></Respons>", "well-formed"),
            ("<Other/>", "one <Response>"),
            ("<Response/><Response/>", "one <Response>"),
            ("<Response>hello</Response>", "text outside"),
            (r#"<!DOCTYPE r [<!ENTITY x "y">]><Response/>"#, "DOCTYPE"),
            ("<Response><Pause>&x;</Pause></Response>", "unknown entity"),
            (r#"<Response><Pause length="-1"/></Response>"#, "length"),
            (r#"<Response><Pause length="601"/></Response>"#, "length"),
            (r#"<Response><Reject reason="later"/></Response>"#, "reason"),
            (
                r#"<Response><Dial timeout="2">+15551112222</Dial></Response>"#,
                "timeout",
            ),
            ("<Response><Dial>call me</Dial></Response>", "E.164"),
            ("<Response><Dial></Dial></Response>", "names no number"),
            (
                "<Response><Dial><Sip>tel:+1555</Sip></Dial></Response>",
                "sip:",
            ),
            (
                r#"<Response><Dial action="ftp://x/">+15551112222</Dial></Response>"#,
                "action",
            ),
            (
                r#"<Response><Dial method="PUT">+15551112222</Dial></Response>"#,
                "method",
            ),
            ("<Response><Connect/></Response>", "exactly one"),
            (
                r#"<Response><Connect><Stream url="https://x/"/></Connect></Response>"#,
                "ws://",
            ),
            (
                r#"<Response><Connect><Stream url="wss://x/" track="both_tracks"/></Connect></Response>"#,
                "inbound_track",
            ),
            (
                r#"<Response><Connect><Stream url="wss://x/"><Parameter value="v"/></Stream></Connect></Response>"#,
                "name",
            ),
            ("<Response><Redirect></Redirect></Response>", "Redirect"),
        ] {
            match p(xml) {
                Ok(v) => panic!("{xml:?} parsed as {v:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{xml:?}: {e}"),
            }
        }
    }

    #[test]
    fn limits_hold() {
        let deep = format!(
            "<Response>{}{}</Response>",
            "<Dial>".repeat(10),
            "</Dial>".repeat(10)
        );
        assert_eq!(p(&deep), Err(TwimlError::TooLarge));
        let many = format!("<Response>{}</Response>", "<Pause/>".repeat(300));
        assert_eq!(p(&many), Err(TwimlError::TooLarge));
        let big = format!("<Response>{}</Response>", " ".repeat(MAX_BYTES));
        assert_eq!(p(&big), Err(TwimlError::TooLarge));
    }
}
