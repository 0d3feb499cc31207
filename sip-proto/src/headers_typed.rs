//! Typed views of the headers the transaction and dialog layers depend on:
//! Via (RFC 3261 §20.42, RFC 3581), name-addr headers (From, To, Contact,
//! Route, Record-Route: §20.10, §25.1) and CSeq (§20.16).

use super::grammar::{self, Params, find_unquoted, parse_quoted, trim_lws};
use super::method::Method;
use super::uri::{Host, Uri, UriError};
use std::fmt;

/// The transport token of a Via sent-protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViaTransport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
}

impl ViaTransport {
    pub fn parse(s: &str) -> Option<ViaTransport> {
        Some(match s.to_ascii_uppercase().as_str() {
            "UDP" => ViaTransport::Udp,
            "TCP" => ViaTransport::Tcp,
            "TLS" => ViaTransport::Tls,
            "SCTP" => ViaTransport::Sctp,
            "WS" => ViaTransport::Ws,
            "WSS" => ViaTransport::Wss,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ViaTransport::Udp => "UDP",
            ViaTransport::Tcp => "TCP",
            ViaTransport::Tls => "TLS",
            ViaTransport::Sctp => "SCTP",
            ViaTransport::Ws => "WS",
            ViaTransport::Wss => "WSS",
        }
    }
    pub fn is_reliable(self) -> bool {
        !matches!(self, ViaTransport::Udp)
    }
}

/// One Via header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// None for transports we do not know (they still parse).
    pub transport: Option<ViaTransport>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

/// The RFC 3261 §8.1.1.7 magic cookie that marks a compliant branch.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn parse(value: &str) -> Result<Via, &'static str> {
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport,
        // with LWS allowed around each SLASH.
        let mut parts = value.splitn(3, '/');
        let name = trim_lws(parts.next().ok_or("Via: missing protocol")?);
        let version = trim_lws(parts.next().ok_or("Via: missing protocol version")?);
        let rest = trim_lws(parts.next().ok_or("Via: missing transport")?);
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err("Via: sent-protocol is not SIP/2.0");
        }
        let tend = rest.find([' ', '\t']).ok_or("Via: missing sent-by")?;
        let transport_token = &rest[..tend];
        if !grammar::is_token(transport_token) {
            return Err("Via: invalid transport");
        }
        let rest = trim_lws(&rest[tend..]);
        let pend = rest.find(';').unwrap_or(rest.len());
        let sent_by = trim_lws(&rest[..pend]);
        let (host, port) = split_sent_by(sent_by)?;
        let params = Params::parse(&rest[pend..]).map_err(|_| "Via: malformed parameters")?;
        if let Some(branch) = params.get("branch") {
            match branch {
                Some(b) if grammar::is_token(b) => {}
                _ => return Err("Via: malformed branch"),
            }
        }
        if let Some(received) = params.value("received")
            && received.parse::<std::net::IpAddr>().is_err()
            && Host::parse(received.trim_matches(['[', ']'])).is_err()
        {
            return Err("Via: malformed received");
        }
        if let Some(Some(rport)) = params.get("rport")
            && grammar::parse_decimal(rport, 65535).is_none()
        {
            return Err("Via: malformed rport");
        }
        if let Some(ttl) = params.value("ttl")
            && grammar::parse_decimal(ttl, 255).is_none()
        {
            return Err("Via: malformed ttl");
        }
        Ok(Via {
            transport: ViaTransport::parse(transport_token),
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// True when the branch carries the RFC 3261 magic cookie.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > BRANCH_COOKIE.len() && b.starts_with(BRANCH_COOKIE))
    }

    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }
}

fn split_sent_by(s: &str) -> Result<(Host, Option<u16>), &'static str> {
    let (h, p) = if s.starts_with('[') {
        let close = s.find(']').ok_or("Via: unterminated IPv6 sent-by")?;
        let rest = trim_lws(&s[close + 1..]);
        let port = if rest.is_empty() {
            None
        } else {
            Some(trim_lws(
                rest.strip_prefix(':').ok_or("Via: junk after sent-by")?,
            ))
        };
        (&s[..=close], port)
    } else {
        match s.find(':') {
            Some(i) => (trim_lws(&s[..i]), Some(trim_lws(&s[i + 1..]))),
            None => (s, None),
        }
    };
    let host = Host::parse(h).map_err(|_| "Via: malformed sent-by host")?;
    let port = match p {
        Some(p) => {
            Some(grammar::parse_decimal(p, 65535).ok_or("Via: malformed sent-by port")? as u16)
        }
        None => None,
    };
    Ok((host, port))
}

/// A name-addr or addr-spec with header parameters (From, To, Contact,
/// Route, Record-Route, Refer-To).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameAddrError {
    #[error("{0}")]
    Syntax(&'static str),
    #[error(transparent)]
    Uri(#[from] UriError),
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, NameAddrError> {
        let v = trim_lws(value);
        if v.is_empty() {
            return Err(NameAddrError::Syntax("empty address"));
        }
        if let Some(lt) = find_unquoted(v, b'<') {
            let display_part = trim_lws(&v[..lt]);
            let display = if display_part.is_empty() {
                None
            } else if display_part.starts_with('"') {
                let (d, rest) = parse_quoted(display_part)
                    .ok_or(NameAddrError::Syntax("malformed display name"))?;
                if !trim_lws(rest).is_empty() {
                    return Err(NameAddrError::Syntax("junk after display name"));
                }
                Some(d)
            } else {
                // *(token LWS)
                if !display_part
                    .split([' ', '\t'])
                    .filter(|t| !t.is_empty())
                    .all(grammar::is_token)
                {
                    return Err(NameAddrError::Syntax("unquoted display name is not tokens"));
                }
                Some(display_part.to_string())
            };
            let after = &v[lt + 1..];
            let gt = after
                .find('>')
                .ok_or(NameAddrError::Syntax("missing '>'"))?;
            let uri = Uri::parse_absolute(&after[..gt])?;
            let params = Params::parse(&after[gt + 1..])
                .map_err(|_| NameAddrError::Syntax("malformed header parameters"))?;
            Ok(NameAddr {
                display,
                uri,
                params,
            })
        } else {
            // addr-spec form: the URI cannot carry ';' params, so the first
            // ';' starts header parameters (RFC 3261 §20.10).
            let end = v.find(';').unwrap_or(v.len());
            let uri_str = trim_lws(&v[..end]);
            if uri_str.contains([' ', '\t', ',', '?', '"']) {
                return Err(NameAddrError::Syntax("addr-spec needs angle brackets"));
            }
            let uri = Uri::parse_absolute(uri_str)?;
            let params = Params::parse(&v[end..])
                .map_err(|_| NameAddrError::Syntax("malformed header parameters"))?;
            Ok(NameAddr {
                display: None,
                uri,
                params,
            })
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    /// Writes the canonical `["display"] <uri>;params` form.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(d) = &self.display {
            grammar::write_quoted(&mut out, d);
            out.push(' ');
        }
        out.push('<');
        out.push_str(self.uri.as_str());
        out.push('>');
        self.params.write_to(&mut out);
        out
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// `CSeq: number method` (RFC 3261 §20.16; number < 2**31, §8.1.1.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, &'static str> {
        let v = trim_lws(value);
        let split = v.find([' ', '\t']).ok_or("CSeq: missing method")?;
        let seq = grammar::parse_decimal(&v[..split], (1u64 << 31) - 1)
            .ok_or("CSeq: sequence number is not a 31-bit integer")? as u32;
        let method = Method::parse(trim_lws(&v[split..])).ok_or("CSeq: method is not a token")?;
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse("SIP  /   2.0  /UDP     192.0.2.2;rport;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, Some(ViaTransport::Udp));
        assert_eq!(v.host, Host::V4("192.0.2.2".parse().unwrap()));
        assert!(v.params.has("rport"));
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
    }

    #[test]
    fn via_ipv6_and_port() {
        let v = Via::parse("SIP/2.0/TCP [2001:db8::9:1]:5070;branch=z9hG4bKas").unwrap();
        assert_eq!(v.port, Some(5070));
        assert!(v.has_rfc3261_branch());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/3.0/UDP h;branch=z9hG4bK1").is_err());
        assert!(Via::parse("SIP/2.0/UDP h:99999").is_err());
        assert!(Via::parse("SIP/2.0/UDP h;branch=").is_err());
        assert!(Via::parse("SIP/2.0/UDP h;received=not an ip").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.tag(), Some("1918181833n"));
        let n =
            NameAddr::parse("Bob Smith <sip:bob@example.com;transport=tcp>;expires=30").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob Smith"));
        assert_eq!(n.params.value("expires"), Some("30"));
        assert!(NameAddr::parse(r#""Watson, Thomas" < sip:t.watson@example.org >"#).is_err());
        assert!(NameAddr::parse("<sip:x@y").is_err());
        assert!(NameAddr::parse("").is_err());
    }

    #[test]
    fn cseq_bounds() {
        let c = CSeq::parse("0009\n  INVITE".replace('\n', " ").as_str()).unwrap();
        assert_eq!(c.seq, 9);
        assert_eq!(c.method, Method::Invite);
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("-1 INVITE").is_err());
        assert!(CSeq::parse("8").is_err());
    }
}
