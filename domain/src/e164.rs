//! Telephone numbers (E.164, ITU-T E.164 §6) and the number patterns that
//! numbers, blocks and routes are keyed by. One definition, shared by the
//! signalling core, the config file and the REST API.

/// Normalises a dialled or calling number to E.164 (`+` and digits):
/// visual separators are removed, `00` becomes `+`. `None` when the string
/// is not a telephone number.
pub fn normalize_e164(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("tel:").unwrap_or(s);
    let (plus, rest) = match s.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let digits: String = rest
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = if !plus {
        digits
            .strip_prefix("00")
            .map(str::to_string)
            .unwrap_or(digits)
    } else {
        digits
    };
    if digits.is_empty() {
        return None;
    }
    Some(format!("+{digits}"))
}

/// A pattern is an E.164 number or a prefix ending in `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub fn parse(p: &str) -> Option<Pattern> {
        match p.strip_suffix('*') {
            Some("") => Some(Pattern::Prefix(String::new())),
            Some(prefix) => {
                let n = normalize_e164(prefix)?;
                Some(Pattern::Prefix(n))
            }
            None => normalize_e164(p).map(Pattern::Exact),
        }
    }

    pub fn matches(&self, number: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == number,
            Pattern::Prefix(p) => number.starts_with(p.as_str()),
        }
    }
}

impl Pattern {
    /// Whether some number matches both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// Whether every number `other` matches is matched by `self` too.
    pub fn covers(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Exact(x), Pattern::Exact(y)) => x == y,
            (Pattern::Prefix(p), Pattern::Exact(x) | Pattern::Prefix(x)) => {
                x.starts_with(p.as_str())
            }
            (Pattern::Exact(_), Pattern::Prefix(_)) => false,
        }
    }

    /// The catch-all `*`.
    pub fn is_catch_all(&self) -> bool {
        matches!(self, Pattern::Prefix(p) if p.is_empty())
    }
}

impl std::fmt::Display for Pattern {
    /// The canonical text: `+15550001234` or `+1555*` (`*` for every number).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(e) => f.write_str(e),
            Pattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("+1555*").overlaps(&p("+15550001234")));
        assert!(p("+15550001234").overlaps(&p("+1555*")));
        assert!(p("+1*").overlaps(&p("+1555*")));
        assert!(!p("+1556*").overlaps(&p("+15550001234")));
        assert!(!p("+15550001234").overlaps(&p("+15550001235")));
        assert!(p("*").is_catch_all() && !p("+1*").is_catch_all());
        assert!(p("+1555*").covers(&p("+15551*")) && !p("+15551*").covers(&p("+1555*")));
        assert!(!p("+15550001234").covers(&p("+1555*")));
    }

    #[test]
    fn canonical_text_round_trips() {
        for (input, canon) in [
            ("+1 (555) 000-1234", "+15550001234"),
            ("0044 20 7946 0000", "+442079460000"),
            ("+1555*", "+1555*"),
            ("1-555*", "+1555*"),
            ("*", "*"),
        ] {
            let p = Pattern::parse(input).expect(input);
            assert_eq!(p.to_string(), canon, "{input}");
            assert_eq!(Pattern::parse(canon), Some(p));
        }
        for bad in [
            "",
            "+",
            "00",
            "00*",
            "abc",
            "+1 555 x",
            "**",
            "+12345678901234567890123",
        ] {
            assert_eq!(Pattern::parse(bad), None, "{bad:?}");
        }
    }
}
