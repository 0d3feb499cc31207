//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966).

use super::grammar::Params;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other absoluteURI (RFC 3261 §25.1), allowed in From, To and
    /// Contact (RFC 4475 §3.3.4): kept as received, never routed to.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    pub fn parse(s: &str) -> Result<Host, UriError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(UriError::Invalid("unterminated IPv6 reference"))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::V6)
                .map_err(|_| UriError::Invalid("invalid IPv6 address"));
        }
        if s.is_empty() {
            return Err(UriError::Invalid("empty host"));
        }
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(Host::V4(v4));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(UriError::Invalid("invalid character in host"));
        }
        Ok(Host::Name(s.to_ascii_lowercase()))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The scheme is syntactically fine but not one we serve (answer 416).
    #[error("unsupported URI scheme {0:?}")]
    UnsupportedScheme(String),
    #[error("malformed URI: {0}")]
    Invalid(&'static str),
}

/// A parsed URI. `raw` is what was received (or built) and is what gets
/// written back out, so unknown details survive a round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    /// User part with %-escapes decoded (telephone number for tel URIs).
    pub user: Option<String>,
    pub host: Option<Host>,
    pub port: Option<u16>,
    pub params: Params,
    raw: String,
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Decodes %HH escapes (RFC 3261 §19.1.4: escaped and unescaped forms are
/// equivalent for comparison).
pub fn unescape(s: &str) -> Result<String, UriError> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .ok_or(UriError::Invalid("truncated %-escape"))?;
            let hex = std::str::from_utf8(hex).map_err(|_| UriError::Invalid("bad %-escape"))?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| UriError::Invalid("bad %-escape"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn is_user_char(b: u8) -> bool {
    // user-unreserved beyond what a password takes (RFC 3261 §25.1)
    is_password_char(b) || matches!(b, b';' | b'?' | b'/')
}

/// uric of RFC 2396 (RFC 3261 §25.1): reserved, unreserved or escaped,
/// which is what a user part takes plus ':' and '@'.
fn is_uric(b: u8) -> bool {
    is_user_char(b) || matches!(b, b':' | b'@')
}

fn is_password_char(b: u8) -> bool {
    // unreserved / escaped / "&" / "=" / "+" / "$" / "," (RFC 3261 §25.1)
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'%'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
        )
}

fn is_param_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'%'
                | b'['
                | b']'
                | b'/'
                | b':'
                | b'&'
                | b'+'
                | b'$'
                | b'='
                | b';'
        )
}

impl Uri {
    /// A URI in a name-addr header (From, To, Contact...): SIP, SIPS and
    /// tel are parsed, any other scheme is kept whole as [`Scheme::Other`]
    /// (RFC 3261 §20.10 allows an absoluteURI there).
    pub fn parse_absolute(s: &str) -> Result<Uri, UriError> {
        match Uri::parse(s) {
            Err(UriError::UnsupportedScheme(_)) => {
                // absoluteURI: scheme ":" followed by uric characters.
                let rest = &s[s.find(':').map_or(s.len(), |i| i + 1)..];
                if rest.is_empty() || !rest.bytes().all(is_uric) {
                    return Err(UriError::Invalid("malformed absoluteURI"));
                }
                Ok(Uri {
                    scheme: Scheme::Other,
                    user: None,
                    host: None,
                    port: None,
                    params: Params::default(),
                    raw: s.to_string(),
                })
            }
            other => other,
        }
    }

    pub fn parse(s: &str) -> Result<Uri, UriError> {
        let colon = s.find(':').ok_or(UriError::Invalid("missing scheme"))?;
        let scheme_str = &s[..colon];
        if !is_scheme(scheme_str) {
            return Err(UriError::Invalid("invalid scheme"));
        }
        let rest = &s[colon + 1..];
        if rest
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
        {
            return Err(UriError::Invalid("whitespace or delimiter inside URI"));
        }
        let scheme = if scheme_str.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_str.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_str.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            return Err(UriError::UnsupportedScheme(scheme_str.to_ascii_lowercase()));
        };
        if scheme == Scheme::Tel {
            let (number, params) = match rest.find(';') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            if number.is_empty()
                || !number.bytes().all(|b| {
                    b.is_ascii_hexdigit()
                        || matches!(b, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#')
                })
            {
                return Err(UriError::Invalid("invalid telephone number"));
            }
            let params = Params::parse(params).map_err(UriError::Invalid)?;
            return Ok(Uri {
                scheme,
                user: Some(number.to_string()),
                host: None,
                port: None,
                params,
                raw: s.to_string(),
            });
        }
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let user = match userinfo {
            Some(ui) => {
                let (user, password) = match ui.find(':') {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                if user.is_empty() || !user.bytes().all(is_user_char) {
                    return Err(UriError::Invalid("invalid character in user part"));
                }
                if let Some(pw) = password
                    && !pw.bytes().all(is_password_char)
                {
                    return Err(UriError::Invalid("invalid character in password"));
                }
                Some(unescape(user)?)
            }
            None => None,
        };
        let hp_end = hostpart.find([';', '?']).unwrap_or(hostpart.len());
        let hostport = &hostpart[..hp_end];
        let tail = &hostpart[hp_end..];
        let (host_str, port) = split_host_port(hostport)?;
        let host = Host::parse(host_str)?;
        let (params_str, headers) = match tail.find('?') {
            Some(i) => (&tail[..i], Some(&tail[i + 1..])),
            None => (tail, None),
        };
        if !params_str.bytes().all(is_param_char) {
            return Err(UriError::Invalid("invalid character in URI parameters"));
        }
        if let Some(h) = headers
            && h.is_empty()
        {
            return Err(UriError::Invalid("empty URI headers"));
        }
        let params = Params::parse(params_str).map_err(UriError::Invalid)?;
        Ok(Uri {
            scheme,
            user,
            host: Some(host),
            port,
            params,
            raw: s.to_string(),
        })
    }

    /// Builds `sip:user@host[:port]`.
    pub fn sip(user: Option<&str>, host: &Host, port: Option<u16>) -> Uri {
        let mut raw = String::from("sip:");
        if let Some(u) = user {
            raw.push_str(u);
            raw.push('@');
        }
        raw.push_str(&host.to_string());
        if let Some(p) = port {
            raw.push(':');
            raw.push_str(&p.to_string());
        }
        Uri {
            scheme: Scheme::Sip,
            user: user.map(str::to_string),
            host: Some(host.clone()),
            port,
            params: Params::default(),
            raw,
        }
    }

    /// Appends a URI parameter (used for `;transport=tcp` on Contacts).
    pub fn with_param(mut self, name: &str, value: Option<&str>) -> Uri {
        self.raw.push(';');
        self.raw.push_str(name);
        if let Some(v) = value {
            self.raw.push('=');
            self.raw.push_str(v);
        }
        self.params.set(name, value.map(str::to_string));
        self
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The transport named by `;transport=`, lower-cased.
    pub fn transport_param(&self) -> Option<String> {
        self.params
            .value("transport")
            .map(|t| t.to_ascii_lowercase())
    }

    /// Default port for the scheme (RFC 3261 §19.1.2).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.scheme == Scheme::Sips {
            5061
        } else {
            5060
        })
    }
}

fn split_host_port(s: &str) -> Result<(&str, Option<u16>), UriError> {
    if s.starts_with('[') {
        let close = s
            .find(']')
            .ok_or(UriError::Invalid("unterminated IPv6 reference"))?;
        let host = &s[..=close];
        let rest = &s[close + 1..];
        if rest.is_empty() {
            return Ok((host, None));
        }
        let port = rest
            .strip_prefix(':')
            .ok_or(UriError::Invalid("junk after IPv6 host"))?;
        return Ok((host, Some(parse_port(port)?)));
    }
    match s.rfind(':') {
        Some(i) => Ok((&s[..i], Some(parse_port(&s[i + 1..])?))),
        None => Ok((s, None)),
    }
}

fn parse_port(s: &str) -> Result<u16, UriError> {
    super::grammar::parse_decimal(s, 65535)
        .map(|p| p as u16)
        .ok_or(UriError::Invalid("invalid port"))
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sip_uri_with_params() {
        let u = Uri::parse("sip:+15550001@127.0.0.1:5070;transport=TCP;lr").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("+15550001"));
        assert_eq!(u.host, Some(Host::V4("127.0.0.1".parse().unwrap())));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport_param().as_deref(), Some("tcp"));
        assert!(u.params.has("lr"));
    }

    #[test]
    fn parses_unusual_user_and_ipv6() {
        let u = Uri::parse("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com").unwrap();
        assert_eq!(u.host, Some(Host::Name("example.com".into())));
        let u = Uri::parse("sip:[2001:db8::10]:5070").unwrap();
        assert_eq!(u.port, Some(5070));
        assert!(Uri::parse("sip:[2001:db8::10:5070").is_err());
        assert!(Uri::parse("sip:[2001:db8::10]5070").is_err());
    }

    #[test]
    fn name_addr_headers_take_any_absolute_uri() {
        // RFC 4475 §3.3.4.
        for u in [
            "isbn:2983792873",
            "http://www.example.com",
            "name:John_Smith",
        ] {
            let parsed = Uri::parse_absolute(u).unwrap();
            assert_eq!(parsed.scheme, Scheme::Other);
            assert_eq!(parsed.as_str(), u);
            assert!(parsed.host.is_none() && parsed.user.is_none());
            assert!(matches!(Uri::parse(u), Err(UriError::UnsupportedScheme(_))));
        }
        assert!(Uri::parse_absolute("http:").is_err());
        assert!(Uri::parse_absolute("http:a\"b").is_err());
        assert_eq!(Uri::parse_absolute("sip:a@b").unwrap().scheme, Scheme::Sip);
    }

    #[test]
    fn unescapes_user() {
        let u = Uri::parse("sip:%75se%72@example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some("user"));
        assert!(Uri::parse("sip:%7@example.com").is_err());
    }

    #[test]
    fn rejects_bad_uris() {
        assert!(matches!(
            Uri::parse("kingkong:example.com"),
            Err(UriError::UnsupportedScheme(_))
        ));
        assert!(Uri::parse("sip:user@example.com:99999").is_err());
        assert!(Uri::parse("sip:user@exa mple.com").is_err());
        assert!(Uri::parse("sip:").is_err());
        assert!(Uri::parse("nocolon").is_err());
        assert!(Uri::parse("sip:user@host;").is_err());
    }

    #[test]
    fn tel_uri() {
        let u = Uri::parse("tel:+15550001234;phone-context=example.com").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some("+15550001234"));
    }
}
