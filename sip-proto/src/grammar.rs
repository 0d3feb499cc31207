//! Lexical pieces of the SIP grammar (RFC 3261 §25.1): tokens, quoted
//! strings, LWS, parameter lists and comma-separated header values.

/// `token` characters (RFC 3261 §25.1).
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Trims SIP linear whitespace (SP / HTAB; folding was removed at framing).
pub fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Splits a header value at top-level commas: commas inside quoted strings
/// or `<...>` do not split (RFC 3261 §7.3.1).
pub fn split_commas(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' if !in_angle => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b',' if !in_quotes && !in_angle => {
                out.push(trim_lws(&value[start..i]));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(trim_lws(&value[start..]));
    out
}

/// Finds the index of the first `needle` byte outside quoted strings.
pub fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Parses a quoted string at the start of `s` (after optional LWS).
/// Returns the unescaped content and the remainder after the closing quote.
pub fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start_matches([' ', '\t']);
    let rest = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, esc) = chars.next()?;
                // quoted-pair excludes CR and LF (RFC 3261 §25.1).
                if esc == '\r' || esc == '\n' {
                    return None;
                }
                out.push(esc);
            }
            '"' => return Some((out, &rest[i + 1..])),
            '\r' | '\n' => return None,
            c => out.push(c),
        }
    }
    None
}

/// A `;name[=value]` parameter (RFC 3261 §25.1 generic-param).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Parameter list, kept in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// Parses `*( SEMI generic-param )`. `s` must start with `;` or be empty
    /// (after LWS). Parameter names are tokens; values are tokens, hosts or
    /// quoted strings.
    pub fn parse(s: &str) -> Result<Params, &'static str> {
        let mut params = Vec::new();
        let mut rest = trim_lws(s);
        while !rest.is_empty() {
            rest = rest
                .strip_prefix(';')
                .ok_or("expected ';' before parameter")?;
            rest = rest.trim_start_matches([' ', '\t']);
            let name_end = rest
                .find(|c: char| !(c.is_ascii() && is_token_char(c as u8)))
                .unwrap_or(rest.len());
            let name = &rest[..name_end];
            if name.is_empty() {
                return Err("empty parameter name");
            }
            rest = rest[name_end..].trim_start_matches([' ', '\t']);
            let value = if let Some(after_eq) = rest.strip_prefix('=') {
                let after_eq = after_eq.trim_start_matches([' ', '\t']);
                if after_eq.starts_with('"') {
                    let (v, r) = parse_quoted(after_eq).ok_or("unterminated quoted parameter")?;
                    rest = r.trim_start_matches([' ', '\t']);
                    Some(v)
                } else {
                    let end = after_eq.find([';', ' ', '\t']).unwrap_or(after_eq.len());
                    let v = &after_eq[..end];
                    if v.is_empty() {
                        return Err("empty parameter value");
                    }
                    if !v
                        .bytes()
                        .all(|b| is_token_char(b) || b == b':' || b == b'[' || b == b']')
                    {
                        return Err("invalid character in parameter value");
                    }
                    rest = after_eq[end..].trim_start_matches([' ', '\t']);
                    Some(v.to_string())
                }
            } else {
                None
            };
            params.push(Param {
                name: name.to_string(),
                value,
            });
        }
        Ok(Params(params))
    }

    /// Case-insensitive lookup; `Some(None)` for a flag parameter.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_deref())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    pub fn set(&mut self, name: &str, value: Option<String>) {
        if let Some(p) = self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            p.value = value;
        } else {
            self.0.push(Param {
                name: name.to_string(),
                value,
            });
        }
    }

    pub fn write_to(&self, out: &mut String) {
        for p in &self.0 {
            out.push(';');
            out.push_str(&p.name);
            if let Some(v) = &p.value {
                out.push('=');
                if v.bytes()
                    .all(|b| is_token_char(b) || b == b':' || b == b'[' || b == b']')
                    && !v.is_empty()
                {
                    out.push_str(v);
                } else {
                    write_quoted(out, v);
                }
            }
        }
    }
}

/// Writes `s` as a quoted string, escaping `"` and `\`.
pub fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Parses a decimal number of at most `max` (leading zeros allowed).
pub fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    let s = trim_lws(s);
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    (v <= max).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_respect_quotes_and_angles() {
        let v = split_commas(r#""a,b" <sip:x@y;p=1,2>, <sip:z@w>"#);
        assert_eq!(v, vec![r#""a,b" <sip:x@y;p=1,2>"#, "<sip:z@w>"]);
    }

    #[test]
    fn params_with_lws_and_quotes() {
        let p = Params::parse(" ; tag = 1918 ;lr; x=\"a;b\"").unwrap();
        assert_eq!(p.value("TAG"), Some("1918"));
        assert!(p.has("lr"));
        assert_eq!(p.value("x"), Some("a;b"));
        assert!(Params::parse(";=x").is_err());
        assert!(Params::parse(";a=\"open").is_err());
        assert!(Params::parse("junk").is_err());
    }

    #[test]
    fn quoted_strings_unescape() {
        let (s, rest) = parse_quoted(r#""J Rosenberg \\\"" <x>"#).unwrap();
        assert_eq!(s, r#"J Rosenberg \""#);
        assert_eq!(rest, " <x>");
        assert!(parse_quoted("\"open").is_none());
    }

    #[test]
    fn decimals_bound() {
        assert_eq!(parse_decimal("0068", 255), Some(68));
        assert_eq!(parse_decimal("300", 255), None);
        assert_eq!(parse_decimal("-1", 255), None);
        assert_eq!(parse_decimal("99999999999999999999999", u64::MAX), None);
    }
}
