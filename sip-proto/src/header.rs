//! Header field names (RFC 3261 §7.3.3 compact forms, §20) and the raw
//! header list of a message.

use std::fmt;

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, $compact:literal)? ;)*) => {
        /// A header field name. Names are case-insensitive; compact forms map
        /// to their long form.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $( $variant, )*
            Other(Box<str>),
        }

        impl HeaderName {
            pub fn parse(name: &str) -> HeaderName {
                $(
                    if name.eq_ignore_ascii_case($canonical) $(|| name.eq_ignore_ascii_case($compact))? {
                        return HeaderName::$variant;
                    }
                )*
                HeaderName::Other(name.into())
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canonical, )*
                    HeaderName::Other(s) => s,
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    MaxForwards => "Max-Forwards";
    Contact => "Contact", "m";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContentEncoding => "Content-Encoding", "e";
    ContentDisposition => "Content-Disposition";
    Route => "Route";
    RecordRoute => "Record-Route";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    Expires => "Expires";
    MinExpires => "Min-Expires";
    Authorization => "Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyAuthenticate => "Proxy-Authenticate";
    SessionExpires => "Session-Expires", "x";
    MinSe => "Min-SE";
    UserAgent => "User-Agent";
    Server => "Server";
    Event => "Event", "o";
    ReferTo => "Refer-To", "r";
    ReferredBy => "Referred-By", "b";
    SubscriptionState => "Subscription-State";
    Subject => "Subject", "s";
    RetryAfter => "Retry-After";
    Warning => "Warning";
    Date => "Date";
    Timestamp => "Timestamp";
    Reason => "Reason";
    AllowEvents => "Allow-Events", "u";
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field line, value unfolded and trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

/// The ordered header list of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| &h.name == name).count()
    }

    /// All comma-separated elements of every instance of `name`
    /// (RFC 3261 §7.3.1: separate lines and comma lists are equivalent).
    pub fn list<'a>(&'a self, name: &'a HeaderName) -> Vec<&'a str> {
        self.get_all(name)
            .flat_map(super::grammar::split_commas)
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| &h.name != name);
    }

    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        self.remove(&name);
        self.push(name, value);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive() {
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(HeaderName::parse("l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse("X-Foo").as_str(), "X-Foo");
    }
}
